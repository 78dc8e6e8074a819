"""On a GPU (skipped without CUDA): the nearest-code search agrees with the CPU's and keeps its memory
to a chunk of at most 1/8 of the `[N, K]` distances, and a run with `training.deterministic` resumes
to the weights of an uninterrupted one. Everything else in the suite runs on the CPU (conftest.py)."""

from __future__ import annotations

import pytest
import torch

from vqtok.quantizers import VectorQuantizer, nearest_code

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def separated(count: int, codes: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes far apart and rows close to them: no near-tie that fp32 rounding on two devices could flip."""
    generator = torch.Generator().manual_seed(seed)
    codebook = torch.randn(codes, dim, generator=generator) * 10
    chosen = torch.randint(codes, (count,), generator=generator)
    return codebook[chosen] + 0.01 * torch.randn(count, dim, generator=generator), codebook


def test_the_search_agrees_with_the_cpu_and_holds_at_most_an_eighth_of_the_distances():
    rows, codebook = separated(65536, 4096, 16)
    expected = nearest_code(rows, codebook)
    quantizer = VectorQuantizer(4096, 16).eval().cuda()
    quantizer.codebook.weight.data.copy_(codebook)
    latents = rows.t().reshape(1, 16, 65536, 1).contiguous().cuda()
    quantizer.select(latents)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    ids = quantizer.select(latents)
    torch.cuda.synchronize()
    assert torch.equal(ids.reshape(-1).cpu(), expected)
    assert torch.cuda.max_memory_allocated() - baseline <= 65536 * 4096 * 4 / 8 + (16 << 20)


def test_a_deterministic_run_on_the_gpu_resumes_exactly(tmp_path, monkeypatch):
    from accelerate.utils import set_seed
    from test_training import tiny_args, tiny_config
    from tiny_data import run_interrupted_after, tiny_images

    from vqtok import VQTokenizer
    from vqtok.data import pixel_dataset
    from vqtok.training import train_tokenizer

    monkeypatch.delenv("ACCELERATE_USE_CPU")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision())
    train_set = pixel_dataset(tiny_images(count=12), 16, 3, augment=True)

    def run(output_dir, init_seed, **overrides):
        set_seed(init_seed)
        model = VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0))
        train_tokenizer(model, train_set, None, tiny_args(output_dir, max_steps=6, deterministic=True, **overrides))
        assert next(model.parameters()).device.type == "cuda"
        return model

    try:
        reference = run(tmp_path / "straight", 0)
        run_interrupted_after(3, monkeypatch, lambda: run(tmp_path / "resumed", 0, checkpoint_every=3))
        resumed = run(tmp_path / "resumed", 7, checkpoint_every=3, resume_from_checkpoint="latest")
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.set_float32_matmul_precision(saved[1])
    different = [name for name, tensor in reference.state_dict().items() if not torch.equal(tensor, resumed.state_dict()[name])]
    assert not different, different
