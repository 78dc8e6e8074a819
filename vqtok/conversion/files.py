"""Reading other projects' checkpoints without running their code: safetensors files (a single file,
or a folder with a sharded index, read only for the tensors asked for), and PyTorch pickles through
`torch.load(weights_only=True)`, which restores tensors and plain containers and refuses any other
object. A local path or a Hub repo id; Hub files are downloaded only when needed.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from safetensors import safe_open

SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class CheckpointFile:
    """A checkpoint folder or file, local or in a Hub repo (`source` is a path or a repo id;
    `subfolder` a folder inside it, as diffusers pipelines keep their VQ model in `vqvae/`)."""

    def __init__(self, source: str | os.PathLike, subfolder: str = "", revision: str | None = None):
        self.source = str(source)
        self.subfolder = subfolder.strip("/")
        self.revision = revision
        self.is_local = os.path.exists(self.source)
        if not self.is_local and not HUB_REPO_ID.fullmatch(self.source):
            raise FileNotFoundError(
                f"checkpoint {self.source!r} does not exist: no such local file or folder, and not a Hub repo id (owner/name)"
            )

    def __str__(self) -> str:
        return f"{self.source}/{self.subfolder}" if self.subfolder else self.source

    def path(self, filename: str, required: bool = True) -> Path | None:
        """Local path of `filename` in the folder or repo (downloaded from the Hub when it is a repo id);
        None when it is absent and not `required`, `FileNotFoundError` naming it when required."""
        if self.is_local:
            path = Path(self.source) / self.subfolder / filename
            if path.is_file():
                return path
            if required:
                raise FileNotFoundError(f"{self} has no {filename}")
            return None
        try:
            return Path(hf_hub_download(self.source, filename, subfolder=self.subfolder or None, revision=self.revision))
        except Exception as error:  # missing entry, missing repo, no network: name the file either way
            if required:
                raise FileNotFoundError(f"could not get {filename} from the Hub repo {self}: {error}") from error
            return None

    def json(self, filename: str) -> dict:
        """A JSON object file of the checkpoint (`ValueError` when it is not one)."""
        path = self.path(filename)
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(content, dict):
            raise ValueError(f"{path} must hold a JSON object, got a {type(content).__name__}")
        return content

    def safetensors(self, weights_name: str, wanted: Callable[[str], bool]) -> dict[str, torch.Tensor]:
        """The tensors whose names `wanted` accepts, from `weights_name` (`model.safetensors`) or its
        sharded form (`model.safetensors.index.json` and the shards holding those tensors only)."""
        index_name = weights_name.removesuffix(".safetensors") + SAFETENSORS_INDEX_SUFFIX
        single = self.path(weights_name, required=False)
        if single is not None:
            return read_safetensors(single, wanted)
        index = self.path(index_name, required=False)
        if index is None:
            raise FileNotFoundError(
                f"{self} has neither {weights_name} nor {index_name}; only safetensors weights are read from a folder or repo"
            )
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted({file for name, file in weight_map.items() if wanted(name)}):
            tensors.update(read_safetensors(self.path(shard), wanted))
        return tensors


def read_safetensors(path: str | os.PathLike, wanted: Callable[[str], bool] = lambda name: True) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file whose names `wanted` accepts (`ValueError` naming a corrupt file)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys() if wanted(name)}
    except Exception as error:
        if isinstance(error, (OSError, KeyboardInterrupt)):
            raise
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error


def read_torch_checkpoint(path: str | os.PathLike) -> dict:
    """A raw PyTorch checkpoint (`.pt`, `.pth`, `.ckpt`) loaded with `torch.load(weights_only=True)`:
    tensors and plain containers only. A file that holds other objects (pickled classes, a Lightning
    trainer's callbacks, ...) is refused with a `ValueError` saying how to get a loadable file, and
    never unpickled. A `.safetensors` path is read as safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+) was not an allowed global", str(error))
        if found is None:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint: {_last_line(error)}") from None
        raise ValueError(
            f"{path} holds objects other than tensors and plain containers (first: {found.group(1)}), so vqtok "
            "refuses to unpickle it (it loads checkpoints with torch.load(weights_only=True) only). Where you trust "
            "the file, save its tensors alone and convert that file: torch.save(torch.load(path, weights_only=False)"
            "['state_dict'], 'weights.pt') (LlamaGen: ['model']), or as safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, not a dict of tensors (a state dict)")
    return content


def _last_line(error: Exception) -> str:
    """The informative line of torch.load's error (what its unpickler found), else its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip() or (lines[index + 1] if index + 1 < len(lines) else line)
    return lines[-1] if lines else type(error).__name__


def state_dict_of(content: dict, path: str, keys: tuple[str, ...] = ("state_dict", "model")) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: the state dict itself, or the one stored under the first of
    `keys` it has (Lightning's `state_dict`, LlamaGen's `model`); non-tensor entries are left out."""
    for key in keys:
        if isinstance(content.get(key), dict):
            content = content[key]
            break
    tensors = {name: value for name, value in content.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path} holds no tensors (looked at the top level and under {list(keys)})")
    return tensors
