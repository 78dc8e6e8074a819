"""The weights of the frozen networks that judge images (VGG16 for LPIPS, Inception for FID):
found at a path the user names, in the torch hub cache, or downloaded there on first use.

Offline, with no file, the error says which file is missing and the two ways to provide it; a
judging network never silently falls back to random features. Files are read with
`torch.load(weights_only=True)` (or as safetensors): nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


# A path of this value builds the network with seeded random weights: a plumbing check of the code
# path only (its figures are no perceptual measure), used by the tests on machines without the files.
RANDOM_WEIGHTS = "random"


class MissingWeightsError(FileNotFoundError):
    """The weights of a judging network are not on this machine and could not be downloaded."""


@dataclass(frozen=True)
class PretrainedWeights:
    """Where the weights of one judging network come from.

    Attributes:
        name: the network, as messages name it ("VGG16 (torchvision's ImageNet weights)").
        filename: the file's name in the torch hub cache (`<torch.hub.get_dir()>/checkpoints/`).
        url: where it is downloaded from on first use.
        option: how a user names a path instead (the run-config option and the command-line flag).
    """

    name: str
    filename: str
    url: str
    option: str

    @property
    def cache_path(self) -> str:
        """Where the torch hub cache keeps the file (`$TORCH_HOME/hub/checkpoints/<filename>`)."""
        return os.path.join(torch.hub.get_dir(), "checkpoints", self.filename)

    def locate(self, path: str | os.PathLike | None = None, download: bool = True) -> str:
        """The file to read: `path` when given (it must exist), else the cached file, downloaded into
        the cache first when missing and `download` is on. Raises `MissingWeightsError` naming the
        file and the two ways to provide it."""
        if path is not None:
            if not os.path.isfile(path):
                raise MissingWeightsError(f"{self.name} weights: {os.fspath(path)} does not exist ({self.option})")
            return os.fspath(path)
        if os.path.isfile(self.cache_path):
            return self.cache_path
        failure = "downloading is switched off (offline)"
        if download and not _offline():
            try:
                os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
                torch.hub.download_url_to_file(self.url, self.cache_path, progress=True)
                return self.cache_path
            except Exception as error:  # noqa: BLE001 - no network, a proxy, a refused connection: all mean "not here"
                failure = f"downloading {self.url} failed ({type(error).__name__}: {error})"
        raise MissingWeightsError(
            f"{self.name} weights are not on this machine: {self.cache_path} does not exist and {failure}. "
            f"Provide them in one of two ways: put {self.filename} (from {self.url}) at {self.cache_path} "
            f"(the torch hub cache; set TORCH_HOME to move it), or pass the file's path with {self.option}."
        )

    def load(self, path: str | os.PathLike | None = None, download: bool = True) -> dict[str, torch.Tensor]:
        """The state dict in the file `locate` finds."""
        from ..conversion.files import read_torch_checkpoint  # imported here: vqtok.conversion imports the package root

        return read_torch_checkpoint(self.locate(path, download))


def _offline() -> bool:
    """Whether the user asked for no downloads (the Hugging Face libraries' offline switches)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VQTOK_OFFLINE"))


def load_matching(module: torch.nn.Module, state: dict[str, torch.Tensor], weights: PretrainedWeights,
                  prefix: str = "", ignore: tuple[str, ...] = ()) -> None:
    """Load `state` (its tensors under `prefix`, those starting with an `ignore` prefix left out) into
    `module` strictly, with a `ValueError` naming the weights and the first missing, unexpected or
    misshapen tensors."""
    wanted = module.state_dict()
    found = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    found = {name: tensor for name, tensor in found.items() if not (ignore and name.startswith(ignore))}
    missing = sorted(set(wanted) - set(found))
    unexpected = sorted(set(found) - set(wanted))
    misshapen = sorted(name for name in set(wanted) & set(found) if wanted[name].shape != found[name].shape)
    problems = [f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", misshapen))
                if names]
    if problems:
        raise ValueError(f"the file given as {weights.name} weights does not fit the network ({'; '.join(problems)})")
    not_finite = [name for name, tensor in found.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if not_finite:
        raise ValueError(f"{weights.name} weights hold non-finite values in {', '.join(not_finite[:5])}")
    module.load_state_dict(found)
