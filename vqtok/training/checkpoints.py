"""Training checkpoints: `accelerator.save_state` folders `output_dir/checkpoints/step_N`, written
atomically with a completeness marker, pruned to a limit, and found again for `resume_from_checkpoint`.

Format. Every process writes its part of the state into `step_N.partial`; once all have finished,
the main process flushes the files to disk, writes `checkpoint_complete.json` (the step and the
size of every file) into the folder and only then renames it `step_N`. A folder is a complete
checkpoint when its marker is readable, every file it lists is present with the recorded size and
every safetensors file opens. `resume_from_checkpoint="latest"` takes the newest complete one,
warning about each newer folder it passes over (a `.partial` left by a killed job, a damaged or
truncated `step_N`); an explicitly named folder that is not complete raises `CheckpointError`
naming the folder and the file at fault.

A `step_N` without a marker was written by vqtok 0.1 before markers existed: it is accepted with a
warning when it holds what such a checkpoint holds (`vqtok.hub.earlier_versions.unmarked_checkpoint_problem`)
and its files open. That writer also renamed `step_N.partial` only after every process had finished,
and this one never leaves a `step_N` without a marker, so such a folder is complete unless it was
damaged later.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
import zipfile
from collections.abc import Mapping

from accelerate import Accelerator
from safetensors import safe_open
from torch import nn

from ..hub import earlier_versions
from .arguments import LoopArguments

CHECKPOINT_PREFIX = "step_"
COMPLETE_MARKER = "checkpoint_complete.json"
MARKER_FORMAT = 1
PARTIAL_SUFFIX = ".partial"
_DISCARDED_SUFFIX = ".discarded"
_OPTIMIZER_STATE = "optimizer"  # Accelerate's optimizer.bin, optimizer_1.bin, ...
_TORCH_ARCHIVES = (".bin", ".pkl", ".pt")
_FOLDER = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)({re.escape(PARTIAL_SUFFIX)}|{re.escape(_DISCARDED_SUFFIX)})?")


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete or damaged; the message names the folder and the file."""


def checkpoint_dir(output_dir: str, step: int) -> str:
    """The folder of the checkpoint of `step`: `output_dir/checkpoints/step_N`."""
    return os.path.join(output_dir, "checkpoints", f"{CHECKPOINT_PREFIX}{step}")


def verify_checkpoint(folder: str) -> dict | None:
    """Check that `folder` is a complete checkpoint and return its marker (None for a folder written
    before markers existed, whose files were checked instead).

    Raises `CheckpointError` naming the folder and the file: no marker in a `.partial` folder, an
    unreadable marker, a listed file missing or of another size, a safetensors file that does not open."""
    folder = os.fspath(folder)
    marker_path = os.path.join(folder, COMPLETE_MARKER)
    if not os.path.isfile(marker_path):
        return _verify_unmarked(folder)
    try:
        with open(marker_path, encoding="utf-8") as handle:
            marker = json.load(handle)
        files = marker["files"]
        if marker.get("format") != MARKER_FORMAT or not isinstance(files, dict):
            raise ValueError(f"unknown marker format {marker.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {folder} is damaged: {COMPLETE_MARKER} cannot be read ({error})") from None
    match = _FOLDER.fullmatch(os.path.basename(os.path.normpath(folder)))
    if match and int(match.group(1)) != marker.get("step"):
        raise CheckpointError(f"checkpoint {folder} is damaged: {COMPLETE_MARKER} records step {marker.get('step')!r}")
    for name, size in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {folder} is incomplete: {name} is missing")
        if os.path.getsize(path) != size:
            raise CheckpointError(
                f"checkpoint {folder} is damaged: {name} has {os.path.getsize(path)} bytes, "
                f"{COMPLETE_MARKER} records {size}"
            )
        _check_safetensors(folder, name)
    return marker


def _verify_unmarked(folder: str) -> None:
    """A folder without a marker: an interrupted write, a saved model, or a checkpoint of vqtok 0.1."""
    if folder.rstrip(os.sep).endswith(PARTIAL_SUFFIX):
        raise CheckpointError(
            f"checkpoint {folder} is incomplete: it has no {COMPLETE_MARKER} (its writing was interrupted)"
        )
    names = _files(folder)
    if "config.json" in names and not any(name.startswith(_OPTIMIZER_STATE) for name in names):
        raise CheckpointError(
            f"{folder} is a saved model (save_pretrained: config.json and weights), not a training checkpoint: it "
            f"holds no optimizer or loop state to resume. Resume from output_dir/checkpoints/step_N (or 'latest')"
        )
    problem = earlier_versions.unmarked_checkpoint_problem(names)
    if problem:
        raise CheckpointError(f"checkpoint {folder} is incomplete: {problem}")
    for name in names:
        _check_safetensors(folder, name)
        _check_torch_archive(folder, name)
    return None


def _check_safetensors(folder: str, name: str) -> None:
    if not name.endswith(".safetensors"):
        return
    try:
        with safe_open(os.path.join(folder, name), framework="pt"):
            pass
    except Exception as error:  # noqa: BLE001 - SafetensorError and OSError alike mean a damaged file
        raise CheckpointError(f"checkpoint {folder} is damaged: {name} cannot be opened ({error})") from None


def _check_torch_archive(folder: str, name: str) -> None:
    """A `torch.save` file (Accelerate's optimizer, scheduler, RNG and loop states) is a zip archive
    whose directory sits at its end: one cut short or damaged does not open. Nothing is unpickled."""
    if not name.endswith(_TORCH_ARCHIVES):
        return
    try:
        with zipfile.ZipFile(os.path.join(folder, name)):
            pass
    except (OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {folder} is damaged: {name} cannot be opened ({error})") from None


def _files(folder: str) -> dict[str, int]:
    """Every file under `folder` (relative path with `/` -> size in bytes), the marker left out."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if relative != COMPLETE_MARKER:
                found[relative] = os.path.getsize(path)
    return dict(sorted(found.items()))


def _candidates(output_dir: str) -> list[tuple[int, bool, str]]:
    """`(step, is_partial, folder)` of every `step_N` and `step_N.partial` under `output_dir/checkpoints`,
    newest first (a `step_N` before the `step_N.partial` of the same step)."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _FOLDER.fullmatch(name)
        if match and match.group(2) != _DISCARDED_SUFFIX and os.path.isdir(os.path.join(root, name)):
            found.append((int(match.group(1)), match.group(2) is not None, os.path.join(root, name)))
    return sorted(found, key=lambda item: (item[0], not item[1]), reverse=True)


def _problem(folder: str, is_partial: bool = False) -> str | None:
    """Why `folder` is no complete checkpoint (the `CheckpointError` message), or None."""
    if is_partial:
        return f"checkpoint {folder} is incomplete: its save was interrupted (never renamed from {PARTIAL_SUFFIX})"
    try:
        verify_checkpoint(folder)
    except CheckpointError as error:
        return str(error)
    return None


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders under `output_dir/checkpoints` (see `verify_checkpoint`), oldest first."""
    candidates = reversed(_candidates(output_dir))
    return [folder for _, is_partial, folder in candidates if _problem(folder, is_partial) is None]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint under `output_dir/checkpoints` (None: there is none), with a
    warning naming each newer folder passed over and why, and one for a folder written before markers."""
    for _, is_partial, folder in _candidates(output_dir):
        problem = _problem(folder, is_partial)
        if problem is None:
            if not os.path.isfile(os.path.join(folder, COMPLETE_MARKER)):
                _warn_unmarked(folder)
            return folder
        warnings.warn(f"{problem}; resume_from_checkpoint=latest skips it for an earlier checkpoint", stacklevel=2)
    return None


def _warn_unmarked(folder: str) -> None:
    warnings.warn(earlier_versions.unmarked_checkpoint_warning(folder, COMPLETE_MARKER), stacklevel=3)


def resolve_checkpoint(args: LoopArguments) -> str | None:
    """The folder `args.resume_from_checkpoint` names (None: start fresh).

    `latest` is the newest complete checkpoint in `args.output_dir` (see `latest_checkpoint`); a
    folder named explicitly must exist and be complete, else `ValueError` (`CheckpointError` naming
    the file at fault)."""
    choice = args.resume_from_checkpoint
    if not choice:
        return None
    if choice == "latest":
        return latest_checkpoint(args.output_dir)
    if not os.path.isdir(choice):
        raise ValueError(f"resume_from_checkpoint={choice!r} is neither 'latest' nor an existing checkpoint folder")
    try:
        marker = verify_checkpoint(choice)
    except CheckpointError as error:
        raise CheckpointError(f"resume_from_checkpoint: {error}") from None
    if marker is None:
        _warn_unmarked(choice)
    return choice


def save_checkpoint(accelerator: Accelerator, args: LoopArguments, step: int,
                    models: Mapping[str, nn.Module] | None = None) -> str:
    """`save_state` into `step_N`: written as `step_N.partial`, marked complete and renamed once every
    process is done (so an interrupted save is never taken for a checkpoint); then prune to the
    total limit and remove what killed jobs left behind. `models` (update name -> model, in the
    order they were prepared) are described in the marker, for the message of a resume that does
    not fit (`check_checkpoint_fits`)."""
    final = checkpoint_dir(args.output_dir, step)
    partial = final + PARTIAL_SUFFIX
    if accelerator.is_main_process and os.path.isdir(partial):
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        descriptions = {name: describe_model(model) for name, model in (models or {}).items()}
        _mark_complete(partial, step, descriptions)
        if os.path.isdir(final):
            _discard(final)
        os.replace(partial, final)
        _fsync(os.path.dirname(final))
        _prune(args)
    accelerator.wait_for_everyone()
    return final


def _mark_complete(folder: str, step: int, models: dict[str, str]) -> None:
    """Flush every file of `folder` to disk, then write the marker listing them with their sizes
    (and the descriptions of the models, when given)."""
    files = _files(folder)
    for name in files:
        _fsync(os.path.join(folder, name))
    marker = {"format": MARKER_FORMAT, "step": step, "files": files}
    if models:
        marker["models"] = models
    with open(os.path.join(folder, COMPLETE_MARKER), "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync(folder)


def _fsync(path: str) -> None:
    """Flush a file or a folder's entries to disk (folders only where the system allows it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. folders on Windows
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _discard(folder: str) -> None:
    """Remove a checkpoint folder, first renaming it so that a removal cut short leaves no half
    checkpoint under a checkpoint's name."""
    discarded = folder + _DISCARDED_SUFFIX
    os.replace(folder, discarded)
    shutil.rmtree(discarded)


def _prune(args: LoopArguments) -> None:
    """Remove what killed jobs left (`.partial` and `.discarded` folders), then every folder older
    than the newest `checkpoints_total_limit` complete checkpoints."""
    root = os.path.join(args.output_dir, "checkpoints")
    for name in os.listdir(root):
        match = _FOLDER.fullmatch(name)
        if match and match.group(2):
            shutil.rmtree(os.path.join(root, name))
    limit = args.checkpoints_total_limit
    if not limit:
        return  # nothing to prune: no need to verify every checkpoint kept
    complete = list_checkpoints(args.output_dir)
    if len(complete) > limit:
        oldest_kept = int(_FOLDER.fullmatch(os.path.basename(complete[-limit])).group(1))
        for step, _, folder in _candidates(args.output_dir):
            if step < oldest_kept:
                _discard(folder)


def describe_model(model: nn.Module) -> str:
    """A model in a few words for messages: its class, and its type and K where its config has them."""
    config = getattr(model, "config", None)
    details = [getattr(config, "model_type", None) or None]
    codebook_size = getattr(config, "codebook_size", None)
    if codebook_size is not None:
        details.append(f"K={codebook_size}")
    details = [detail for detail in details if detail]
    return type(model).__name__ + (f" ({', '.join(details)})" if details else "")


def check_checkpoint_fits(folder: str, models: Mapping[str, nn.Module], loop_states: int | None = None) -> None:
    """Raise `CheckpointError` saying what differs when the weights in checkpoint `folder` are not
    those of `models` (update name -> unwrapped model, in the order they were prepared, whose
    weights Accelerate saved as model.safetensors, model_1.safetensors, ...): another number of
    models, tensors missing or unexpected, or of another shape; or, given `loop_states` (the objects
    registered for checkpointing), another number of them (a streamed run keeps its stream's
    position, an objective its buffers). Reads only the files' headers."""
    recorded = _recorded_models(folder)
    names = os.listdir(folder)
    weights = sorted((name for name in names if _WEIGHTS_FILE.fullmatch(name)), key=_weights_index)
    differences = []
    if len(weights) != len(models):
        differences.append(f"it holds {len(weights)} model(s), this run trains {len(models)}")
    saved_states = sum(1 for name in names if _LOOP_STATE_FILE.fullmatch(name))
    if loop_states is not None and saved_states != loop_states:
        differences.append(f"it holds {saved_states} loop state(s) (custom_checkpoint_N.pkl), this run keeps {loop_states} "
                           "(a streamed run adds its stream's position, a weight EMA its averages; objectives with networks add theirs)")
    for index, (name, model) in enumerate(models.items()):
        file = f"model{f'_{index}' if index else ''}.safetensors"
        if file in weights:
            differences += [f"{name}: {problem}" for problem in _tensor_differences(os.path.join(folder, file), model)]
    if differences:
        ours = "; ".join(f"{name}: {describe_model(model)}" for name, model in models.items())
        theirs = "; ".join(f"{name}: {text}" for name, text in recorded.items()) if recorded else "not recorded"
        raise CheckpointError(
            f"checkpoint {folder} was written by another run's models (they hold: {theirs}; this run trains: {ours}): "
            + "; ".join(differences)
            + ". Resume with the configuration that wrote it, or start this run afresh in another output_dir"
        )


_WEIGHTS_FILE = re.compile(r"model(?:_(\d+))?\.safetensors")
_LOOP_STATE_FILE = re.compile(r"custom_checkpoint_\d+\.pkl")


def _weights_index(name: str) -> int:
    return int(_WEIGHTS_FILE.fullmatch(name).group(1) or 0)


def _recorded_models(folder: str) -> dict[str, str]:
    try:
        with open(os.path.join(folder, COMPLETE_MARKER), encoding="utf-8") as handle:
            models = json.load(handle).get("models", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return models if isinstance(models, dict) else {}


def _tensor_differences(path: str, model: nn.Module, shown: int = 3) -> list[str]:
    """What differs between the tensors of safetensors file `path` and `model.state_dict()`, by name
    and shape. A tensor the file leaves out because it shares its memory with one it keeps (tied
    weights) is no difference."""
    with safe_open(path, framework="pt") as handle:
        saved = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
    expected = model.state_dict()
    tied = {}
    for name, tensor in expected.items():
        tied.setdefault((tensor.data_ptr(), tensor.device), []).append(name)
    missing = [name for name in expected if name not in saved
               and not any(other in saved for other in tied[(expected[name].data_ptr(), expected[name].device)])]
    unexpected = [name for name in saved if name not in expected]
    reshaped = [f"{name} {saved[name]} there, {list(expected[name].shape)} here"
                for name in expected if name in saved and saved[name] != list(expected[name].shape)]

    def listed(names):
        more = f", ... ({len(names)} in all)" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    problems = []
    if missing:
        problems.append(f"tensors it lacks: {listed(missing)}")
    if unexpected:
        problems.append(f"tensors this model does not have: {listed(unexpected)}")
    if reshaped:
        problems.append(f"tensors of another shape: {listed(reshaped)}")
    return problems
