"""Checks that make `from_pretrained` safe and its failures clear.

Before transformers reads a checkpoint, vqtok resolves `config.json` and the safetensors weights
itself: a checkpoint with only a pickle file (`pytorch_model.bin`, ...) is refused without the
file ever being downloaded or opened, and missing files are named; a `config.json` that is not a
JSON object is refused. After loading, any tensor whose shape differs from the config, or that is
missing or unexpected, raises instead of being silently re-initialised, and so does any parameter
or buffer holding NaN or an infinity.
"""

from __future__ import annotations

import json
import os
import inspect
import re
from pathlib import Path

import torch
from huggingface_hub import HfApi, is_offline_mode
from transformers.utils.hub import cached_file, cached_files

# from_pretrained arguments that say where a checkpoint's files come from: those transformers'
# `cached_files` takes (public keywords with a default), read from its signature.
HUB_DOWNLOAD_KWARGS = tuple(
    name for name, parameter in inspect.signature(cached_files).parameters.items()
    if parameter.default is not inspect.Parameter.empty and not name.startswith("_")
)
# Weight files vqtok reads (plain and sharded safetensors).
SAFETENSORS_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
# Pickle-based checkpoints: only named in the error message, never opened.
PICKLE_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# What `json.loads` returns -> the JSON name of that kind of value, for messages.
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _resolve_file(source: str, filename: str, download: dict) -> str | None:
    """Local path of `filename` in a directory or Hub repo (downloaded into the cache), None if absent."""
    return cached_file(source, filename, _raise_exceptions_for_missing_entries=False, **download)


def _raise_if_offline_cache_miss(source: str, filename: str, download: dict) -> None:
    """Offline, a Hub file missing from the cache says nothing about the repo: say that instead."""
    if not os.path.isdir(source) and (download.get("local_files_only") or is_offline_mode()):
        cache = f" ({download['cache_dir']})" if download.get("cache_dir") else ""
        raise OSError(
            f"{filename} of {source} is not in the local Hub cache{cache}, and offline mode (HF_HUB_OFFLINE=1 or "
            "local_files_only=True) forbids downloading it: load it once with network access first"
        )


# A Hub repo id: `name` or `namespace/name` of letters, digits, "-", "_" and "." (huggingface_hub's rule).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def check_local_folder(name_or_path, what: str = "checkpoint") -> None:
    """OSError naming the folder when `name_or_path` must be a local folder (a PathLike, an absolute
    or ./ ../ ~ path, or a name that cannot be a Hub repo id, such as `outputs/run/tokenizer`) and
    none exists there, instead of the Hub client's "Repo id must be in the form ..." error."""
    text = os.fspath(name_or_path)
    looks_local = (isinstance(name_or_path, os.PathLike) or os.path.isabs(text) or text.startswith((".", "~"))
                   or not _REPO_ID.match(text))
    if looks_local and not os.path.isdir(os.path.expanduser(text)):
        raise OSError(f"the local folder {text!r} does not exist (expected a {what} folder with config.json and "
                      "model.safetensors, as save_pretrained writes; or pass a Hub repo id such as 'namespace/name')")


def check_config_file(source: str, download: dict, loader: str | None = None, model_type: str | None = None) -> None:
    """OSError when `config.json` is missing; ValueError when it holds valid JSON that is not an
    object (an array, a string, ...), or when `model_type` is given and the file names another one
    (`loader` is the class doing the loading, for the message)."""
    path = _resolve_file(source, "config.json", download)
    if path is None:
        _raise_if_offline_cache_miss(source, "config.json", download)
        raise OSError(
            f"{source} has no config.json: a vqtok checkpoint is a config.json plus model.safetensors, "
            "as written by save_pretrained or push_to_hub"
        )
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports an unreadable or malformed config.json itself
    if not isinstance(content, dict):
        shown = json.dumps(content)
        raise ValueError(
            f"{path} (the config.json of {source}) must hold a JSON object of config fields, got a JSON "
            f"{_JSON_KINDS.get(type(content), type(content).__name__)}: "
            f"{shown if len(shown) <= 60 else shown[:57] + '...'}"
        )
    found = content.get("model_type")
    if model_type is not None and found != model_type:
        raise ValueError(
            f"the config.json of {source} has model_type {found!r}, but {loader} loads {model_type!r}; "
            "VQTokenizer.from_pretrained loads any vqtok tokenizer type"
        )


def check_safetensors_weights(source: str, download: dict, variant: str | None = None) -> str:
    """The local path of the checkpoint's safetensors weights (`model.safetensors`, or the index of
    sharded weights); OSError when there are none, saying so when there is only a pickle."""
    # transformers' variant naming: model.<variant>.safetensors, model.safetensors.index.<variant>.json
    names = [f"{stem}.{variant}.{ext}" if variant else f"{stem}.{ext}"
             for stem, ext in (name.rsplit(".", 1) for name in SAFETENSORS_WEIGHTS_FILES)]
    for name in names:
        path = _resolve_file(source, name, download)
        if path:
            return path
    _raise_if_offline_cache_miss(source, names[0], download)
    pickles = _pickle_checkpoints(source, download)
    if pickles:
        raise OSError(
            f"{source} has only a pickle checkpoint ({', '.join(pickles)}) and no model.safetensors. vqtok loads "
            "safetensors weights only and never unpickles a file, since unpickling can run arbitrary code. "
            "If you trust the file, convert it once: "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')"
        )
    raise OSError(
        f"{source} has no {names[0]} (nor a sharded {names[1]}): a vqtok checkpoint "
        "is a config.json plus model.safetensors, as written by save_pretrained or push_to_hub"
    )


def _pickle_checkpoints(source: str, download: dict) -> list[str]:
    """Names of pickle-based checkpoint files at the top of the checkpoint (best effort, for messages)."""
    subfolder = (download.get("subfolder") or "").strip("/")
    if os.path.isdir(source):
        folder = os.path.join(source, subfolder)
        names = os.listdir(folder) if os.path.isdir(folder) else []
    elif download.get("local_files_only") or is_offline_mode():
        return []  # the repo's file list is not in the cache
    else:
        try:
            files = HfApi().list_repo_files(source, revision=download.get("revision"), token=download.get("token"))
        except Exception:  # noqa: BLE001 - only used to word an error that is raised anyway
            return []
        prefix = f"{subfolder}/" if subfolder else ""
        names = [f[len(prefix):] for f in files if f.startswith(prefix) and "/" not in f[len(prefix):]]
    return sorted(name for name in names if name.endswith(PICKLE_CHECKPOINT_SUFFIXES))


def reinitialise_mismatched(model: torch.nn.Module, info: dict) -> None:
    """Give every tensor that `ignore_mismatched_sizes=True` let through with another shape than the
    checkpoint's (`info["mismatched_keys"]`) the value of a freshly built model of the same config.

    transformers re-creates such tensors empty and leaves their initialisation to `_init_weights`,
    which vqtok's models keep as a no-op (each quantizer initialises its own state when built), so
    without this they would hold whatever the memory held, NaN included."""
    names = [key for key, *_ in info.get("mismatched_keys") or ()]
    if not names:
        return
    fresh = type(model)(model.config).state_dict()
    state = model.state_dict()
    with torch.no_grad():
        for name in names:
            state[name].copy_(fresh[name])


def check_loading_info(source: str, info: dict, allow_mismatch: bool) -> None:
    """ValueError naming every tensor whose shape differs from the config, or that is missing or unexpected."""
    problems = []
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched and not allow_mismatch:
        shapes = ", ".join(f"{key} (checkpoint {list(saved)}, config {list(built)})" for key, saved, built in mismatched)
        problems.append(f"tensor shapes differ: {shapes}")
    if info.get("missing_keys"):
        problems.append(f"missing from the checkpoint: {', '.join(sorted(info['missing_keys']))}")
    if info.get("unexpected_keys"):
        problems.append(f"not part of the model: {', '.join(sorted(info['unexpected_keys']))}")
    problems += [str(message) for message in info.get("error_msgs") or ()]
    if problems:
        hint = " (ignore_mismatched_sizes=True re-initialises shape-mismatched tensors on purpose)" if mismatched else ""
        raise ValueError(
            f"the weights of {source} do not match its config.json: {'; '.join(problems)}. Was config.json edited, "
            f"or does it belong to another checkpoint? No model was returned{hint}."
        )


def check_finite_weights(model: torch.nn.Module, source: str, weights_path: str,
                         consequence: str = "no model was returned") -> None:
    """ValueError naming every floating parameter and buffer of `model`, loaded from the checkpoint
    `source` (its weights file: `weights_path`), that holds NaN or an infinity, with its count of
    such values, ending with `consequence`. (Tensors on the `meta` device hold no values and are
    not checked.)"""
    bad = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.device.type == "meta":
            continue
        count = int((~torch.isfinite(tensor.detach())).sum())
        if count:
            bad.append(f"{name} ({count} non-finite value{'s' if count > 1 else ''})")
    if bad:
        raise ValueError(
            f"the weights of {source} ({weights_path}) hold NaN or infinite values: {', '.join(bad)}. The "
            f"checkpoint was saved from a diverged run or is corrupt; {consequence}"
        )
