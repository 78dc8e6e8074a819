"""Shared pytest fixtures."""

import os

import example_extensions  # noqa: F401 - registers the test-only type and backbone for the whole session
import pytest
import torch

# Tests that train through Accelerate assert CPU-exact results (bit-for-bit resumes, identical ranks):
# on a machine with a GPU they stay on the CPU, and so do the processes they start (the variable is
# inherited). Tests of GPU behaviour use the device explicitly (tests/test_cuda.py).
os.environ.setdefault("ACCELERATE_USE_CPU", "true")

try:
    from hub_server import LocalHub, patch_hf_environment, reset_cached_clients
except ImportError:  # if tests/ ever becomes a package
    from tests.hub_server import LocalHub, patch_hf_environment, reset_cached_clients


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A running `LocalHub`, with huggingface_hub/transformers pointed at it.

    HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN (a fake token), HF_HUB_DISABLE_XET and the
    matching `huggingface_hub.constants` are patched for the test and restored afterwards;
    the download cache lives under `tmp_path / "hf_home"`.
    """
    with LocalHub() as hub:
        patch_hf_environment(monkeypatch, hub.endpoint, tmp_path / "hf_home")
        try:
            yield hub
        finally:
            reset_cached_clients()


@pytest.fixture
def one_thread():
    """The machine is small and shared: two OpenMP threads per test process only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache (`TORCH_HOME`) with downloads allowed: the folder where weights of
    the judging networks (VGG16, Inception) would be looked for."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VQTOK_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"
