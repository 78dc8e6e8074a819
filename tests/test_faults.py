"""Faults a training run meets and what vqtok does about them: a job killed (SIGKILL) in the middle
of a checkpoint write, checkpoints damaged afterwards, checkpoints written before completeness
markers, and unreadable images in the training data."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image
from PIL import Image as PILImage
from safetensors.torch import load_file

from vqtok.data import check_images, load_image_dataset
from vqtok.training import TrainingArguments
from vqtok.training.checkpoints import (
    COMPLETE_MARKER,
    CheckpointError,
    check_checkpoint_fits,
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from vqtok.training.loop import Update, make_accelerator, start_training

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT_S = 120


def load_script():
    import vqtok.commands.train

    return vqtok.commands.train


def skip_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "skips it" in str(w.message)]


# --- A job killed with SIGKILL while it writes a checkpoint -------------------------------------


def _train_child(output_dir: str, init_seed: int, resume: str | None, kill_at_step: int | None) -> None:
    """A training run in its own process: the tiny tokenizer for 6 steps with a checkpoint every 2,
    saved to `output_dir/tokenizer`; warnings go to `output_dir/warnings.json`. With `kill_at_step`
    the process SIGKILLs itself in the checkpoint of that step, after the model weights and half of
    the optimizer state were written."""
    try:
        torch.set_num_threads(1)
        if kill_at_step is not None:
            _die_while_saving(f"step_{kill_at_step}.partial")
        from accelerate.utils import set_seed
        from tiny_data import tiny_images

        from vqtok import VQConfig, VQTokenizer
        from vqtok.data import pixel_dataset
        from vqtok.training import train_tokenizer

        args = TrainingArguments(
            output_dir=output_dir, max_steps=6, batch_size=8, learning_rate=3e-3, warmup_steps=2, log_every=2,
            report_to="none", seed=0, checkpoint_every=2, checkpoints_total_limit=2, resume_from_checkpoint=resume,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            set_seed(init_seed)
            config = VQConfig(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=8, codebook_size=16,
                              dead_code_threshold=5.0)
            model = VQTokenizer.from_config(config)
            train_tokenizer(model, pixel_dataset(tiny_images(), 16, 3, augment=True), None, args)
        model.save_pretrained(os.path.join(output_dir, "tokenizer"))
        Path(output_dir, "warnings.json").write_text(json.dumps([str(w.message) for w in caught]))
    except BaseException:
        Path(output_dir, "error.txt").write_text(traceback.format_exc())
        raise


def _die_while_saving(folder_name: str) -> None:
    """Make `accelerate.checkpointing.save` kill the process once it has written half of the
    optimizer state into `folder_name` (the model weights, written first, are complete)."""
    import accelerate.checkpointing

    save = accelerate.checkpointing.save

    def save_then_die(obj, path, **kwargs):
        save(obj, path, **kwargs)
        if Path(path).parent.name == folder_name and Path(path).name == "optimizer.bin":
            os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    accelerate.checkpointing.save = save_then_die


def _run_children(*runs: tuple) -> list[int]:
    """Run `_train_child(*run)` for each run, at once, each in a fresh process forked from a server
    that has only imported the modules; their exit codes."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "vqtok.training.trainer", "tiny_data", "test_faults"])
    processes = [context.Process(target=_train_child, args=run) for run in runs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(CHILD_TIMEOUT_S)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
            pytest.fail(f"a training process still ran after {CHILD_TIMEOUT_S} s")
    return [process.exitcode for process in processes]


def _child_error(output_dir: Path) -> str:
    error = output_dir / "error.txt"
    return error.read_text() if error.exists() else ""


def test_sigkill_during_a_checkpoint_write_resumes_exactly(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    codes = _run_children((str(straight), 0, None, None), (str(killed), 0, None, 4))
    assert codes == [0, -signal.SIGKILL], f"{codes}\n{_child_error(straight)}{_child_error(killed)}"

    # What the killed job left: step_2 complete, step_4 half written under its .partial name.
    checkpoints = killed / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_2", "step_4.partial"]
    assert (checkpoints / "step_2" / COMPLETE_MARKER).exists()
    assert not (checkpoints / "step_4.partial" / COMPLETE_MARKER).exists()
    assert (checkpoints / "step_4.partial" / "model.safetensors").exists()

    # Rerun unchanged with `latest` (another initialisation: everything must come from step_2).
    assert _run_children((str(killed), 123, "latest", None)) == [0], _child_error(killed)
    caught = json.loads((killed / "warnings.json").read_text())
    assert any("step_4.partial is incomplete" in message and "skips it" in message for message in caught), caught
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_4", "step_6"]

    expected = load_file(straight / "tokenizer" / "model.safetensors")
    got = load_file(killed / "tokenizer" / "model.safetensors")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"tensors differ from the uninterrupted run: {different}"


# --- Checkpoints damaged after they were written ------------------------------------------------


@pytest.fixture(scope="module")
def accelerator_with_state(tmp_path_factory):
    """An accelerator holding a tiny model (not trained), its optimizer and the loop's state."""
    from tiny_data import tiny_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("unused")), report_to="none", warmup_steps=0)
    accelerator = make_accelerator(args)
    model = tiny_tokenizer(tmp_path_factory.mktemp("untrained"))
    start_training(accelerator, [Update("tokenizer", model, model.build_optimizer(1e-3, 0.0), None)], args, {})
    torch.set_num_threads(threads)
    return accelerator


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, accelerator_with_state) -> Path:
    """An output folder with complete checkpoints step_2 and step_4."""
    output_dir = tmp_path_factory.mktemp("saved_run")
    for step in (2, 4):
        save_checkpoint(accelerator_with_state, TrainingArguments(output_dir=str(output_dir)), step)
    return output_dir


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _scramble_header(path: Path) -> None:
    """Same size, but the safetensors header is no longer JSON."""
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff" * 8
    path.write_bytes(bytes(data))


def _append(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\0" * 7)


def _interrupted(folder: Path) -> Path:
    (folder / COMPLETE_MARKER).unlink()
    return folder.rename(folder.with_name(folder.name + ".partial"))


# name -> (damage step_4 and return the folder, the file the error must name)
DAMAGE = {
    "file missing": (lambda f: (f / "optimizer.bin").unlink() or f, "optimizer.bin is missing"),
    "file truncated": (lambda f: _truncate(f / "optimizer.bin") or f, "optimizer.bin has \\d+ bytes"),
    "file longer": (lambda f: _append(f / "random_states_0.pkl") or f, "random_states_0.pkl has \\d+ bytes"),
    "safetensors truncated": (lambda f: _truncate(f / "model.safetensors") or f, "model.safetensors has \\d+ bytes"),
    "safetensors unreadable": (lambda f: _scramble_header(f / "model.safetensors") or f,
                               "model.safetensors cannot be opened"),
    "marker unreadable": (lambda f: (f / COMPLETE_MARKER).write_text("{") and f, f"{COMPLETE_MARKER} cannot be read"),
    "marker of another step": (lambda f: (f / COMPLETE_MARKER).write_text(
        (f / COMPLETE_MARKER).read_text().replace('"step": 4', '"step": 3')) and f, "records step 3"),
    "interrupted write": (_interrupted, f"no {COMPLETE_MARKER}"),
    "legacy, safetensors unreadable": (lambda f: (f / COMPLETE_MARKER).unlink() or _truncate(f / "model.safetensors")
                                       or f, "model.safetensors cannot be opened"),
    "legacy, no weights": (lambda f: (f / COMPLETE_MARKER).unlink() or (f / "model.safetensors").unlink() or f,
                           "neither .* nor model weights"),
    "legacy, optimizer state missing": (lambda f: (f / COMPLETE_MARKER).unlink() or (f / "optimizer.bin").unlink()
                                        or f, r"no optimizer state \(optimizer.bin\)"),
    "legacy, optimizer state truncated": (lambda f: (f / COMPLETE_MARKER).unlink() or _truncate(f / "optimizer.bin")
                                          or f, "optimizer.bin cannot be opened"),
    "legacy, loop state truncated": (lambda f: (f / COMPLETE_MARKER).unlink() or _truncate(f / "custom_checkpoint_0.pkl")
                                     or f, "custom_checkpoint_0.pkl cannot be opened"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_is_skipped_by_latest_and_named_when_explicit(saved_run, tmp_path, damage):
    output_dir = tmp_path / "run"
    shutil.copytree(saved_run, output_dir)
    make_damage, message = DAMAGE[damage]
    folder = make_damage(output_dir / "checkpoints" / "step_4")

    assert [Path(p).name for p in list_checkpoints(output_dir)] == ["step_2"]
    with pytest.warns(UserWarning, match=f"{re.escape(folder.name)} is (incomplete|damaged).*skips it") as caught:
        found = resolve_checkpoint(TrainingArguments(output_dir=str(output_dir), resume_from_checkpoint="latest"))
    assert found == str(output_dir / "checkpoints" / "step_2") and len(skip_warnings(caught)) == 1
    with pytest.raises(CheckpointError, match=f"{re.escape(str(folder))}.*{message}"):
        resolve_checkpoint(TrainingArguments(resume_from_checkpoint=str(folder)))


def test_checkpoint_written_before_markers_is_accepted_with_a_warning(saved_run, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(saved_run, output_dir)
    legacy = output_dir / "checkpoints" / "step_4"
    (legacy / COMPLETE_MARKER).unlink()
    assert [Path(p).name for p in list_checkpoints(output_dir)] == ["step_2", "step_4"]
    for choice in ("latest", str(legacy)):
        args = TrainingArguments(output_dir=str(output_dir), resume_from_checkpoint=choice)
        with pytest.warns(UserWarning, match=f"{re.escape(str(legacy))} has no {COMPLETE_MARKER}"):
            assert resolve_checkpoint(args) == str(legacy)


def test_a_saved_model_folder_is_no_checkpoint_to_resume(tmp_path):
    from tiny_data import tiny_tokenizer

    tiny_tokenizer(tmp_path / "tokenizer")  # save_pretrained: config.json, model.safetensors
    with pytest.raises(CheckpointError, match=r"tokenizer is a saved model \(save_pretrained.*not a training checkpoint"):
        resolve_checkpoint(TrainingArguments(resume_from_checkpoint=str(tmp_path / "tokenizer")))


def test_a_checkpoint_of_other_models_says_what_differs(accelerator_with_state, tmp_path):
    from tiny_data import tiny_prior, tiny_tokenizer

    from vqtok import FSQConfig, VQTokenizer

    saved = tiny_tokenizer(tmp_path / "tokenizer")
    described = save_checkpoint(accelerator_with_state, TrainingArguments(output_dir=str(tmp_path / "run")), 2,
                                models={"tokenizer": saved})
    check_checkpoint_fits(described, {"tokenizer": tiny_tokenizer(tmp_path / "same", seed=1)})  # same tensors: fits

    other_k = tiny_tokenizer(tmp_path / "k32", codebook_size=32)
    with pytest.raises(CheckpointError, match=r"they hold: tokenizer: VQModel \(vqtok-vq, K=16\); this run trains: tokenizer: "
                       r"VQModel \(vqtok-vq, K=32\)\): tokenizer: tensors of another shape: quantizer.codebook.weight "
                       r"\[16, 8\] there, \[32, 8\] here"):
        check_checkpoint_fits(described, {"tokenizer": other_k})
    fsq = VQTokenizer.from_config(FSQConfig(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4),
                                            latent_dim=2, levels=[4, 4]))
    with pytest.raises(CheckpointError, match=r"this run trains: tokenizer: FSQModel \(vqtok-fsq, K=16\)\): tokenizer: "
                       r"tensors this model does not have: quantizer.codebook.*tensors of another shape: encoder.conv_out.weight"):
        check_checkpoint_fits(described, {"tokenizer": fsq})
    with pytest.raises(CheckpointError, match=r"this run trains: prior: TokenPrior \(vqtok-prior, K=16\)\): prior: tensors "
                       r"it lacks: lm.transformer.wte.weight"):
        check_checkpoint_fits(described, {"prior": tiny_prior()})
    with pytest.raises(CheckpointError, match=r"it holds 1 model\(s\), this run trains 2"):
        check_checkpoint_fits(described, {"tokenizer": saved, "discriminator": torch.nn.Linear(2, 2)})
    # Tied weights (the prior's embedding and output layer) are saved once: no difference.
    prior = tiny_prior()
    assert not any(name.startswith("lm.lm_head") for name in load_file_keys(prior, tmp_path))
    check_checkpoint_fits(str(tmp_path / "prior_weights"), {"prior": prior})


def load_file_keys(model, tmp_path) -> list[str]:
    """Save `model` as Accelerate does (safetensors, tied tensors once) into tmp_path/prior_weights."""
    from accelerate import Accelerator

    folder = tmp_path / "prior_weights"
    Accelerator(cpu=True).save_model(model, folder)
    return list(load_file(folder / "model.safetensors"))


def test_resuming_another_runs_checkpoint_fails_before_any_step_saying_what_differs(saved_run, tmp_path, monkeypatch):
    from test_training import tiny_args, tiny_config
    from tiny_data import tiny_images

    from vqtok import VQTokenizer
    from vqtok.data import pixel_dataset
    from vqtok.training import loop, train_tokenizer

    monkeypatch.setattr(loop, "optimization_step", lambda *args, **kwargs: pytest.fail("trained from a wrong checkpoint"))
    model = VQTokenizer.from_config(tiny_config(codebook_size=32)).train()
    args = tiny_args(tmp_path / "run", resume_from_checkpoint=str(saved_run / "checkpoints" / "step_4"))
    with pytest.raises(CheckpointError, match=r"step_4 was written by another run's models \(they hold: not recorded; "
                       r"this run trains: tokenizer: VQModel \(vqtok-vq, K=32\)\).*of another shape"):
        train_tokenizer(model, pixel_dataset(tiny_images(count=8), 16), None, args)


def test_only_damaged_checkpoints_start_fresh_with_warnings(saved_run, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(saved_run, output_dir)
    for step in (2, 4):
        _truncate(output_dir / "checkpoints" / f"step_{step}" / "model.safetensors")
    with pytest.warns(UserWarning) as caught:
        latest = TrainingArguments(output_dir=str(output_dir), resume_from_checkpoint="latest")
        assert resolve_checkpoint(latest) is None
    skipped = [("step_4" in message, "step_2" in message) for message in skip_warnings(caught)]
    assert skipped == [(True, False), (False, True)]  # newest first


def test_save_replaces_a_step_and_removes_what_killed_jobs_left(saved_run, accelerator_with_state, tmp_path):
    output_dir = tmp_path / "run"
    shutil.copytree(saved_run, output_dir)
    checkpoints = output_dir / "checkpoints"
    (checkpoints / "step_3.partial").mkdir()  # a killed save
    (checkpoints / "step_1.discarded").mkdir()  # a killed removal
    _truncate(checkpoints / "step_4" / "optimizer.bin")
    args = TrainingArguments(output_dir=str(output_dir), checkpoints_total_limit=2)
    save_checkpoint(accelerator_with_state, args, 4)  # a run resumed from an earlier step saves step 4 again
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_2", "step_4"]
    assert [Path(p).name for p in list_checkpoints(output_dir)] == ["step_2", "step_4"]
    save_checkpoint(accelerator_with_state, args, 6)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_4", "step_6"]


# --- Unreadable images in the training data -------------------------------------------------


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Four good PNGs, one truncated PNG and one that is not an image at all."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        PILImage.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(folder / f"good{index}.png")
    good = (folder / "good0.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "garbage.png").write_bytes(b"this is not a PNG")
    return folder


def test_bad_images_fail_listing_every_file(image_folder):
    images = load_image_dataset(str(image_folder))
    with pytest.raises(ValueError, match="2 of 6 images cannot be read") as raised:
        check_images(images, "fail")
    assert str(image_folder / "truncated.png") in str(raised.value)
    assert str(image_folder / "garbage.png") in str(raised.value)


def test_bad_images_are_skipped_with_a_warning_naming_each(image_folder):
    images = load_image_dataset(str(image_folder))
    with pytest.warns(UserWarning, match="skipping 2 of 6 images") as caught:
        kept, bad = check_images(images, "skip")
    assert len(kept) == 4 and len(bad) == 2 and all(row["image"].size == (20, 16) for row in kept)
    message = next(str(w.message) for w in caught if "skipping" in str(w.message))
    assert str(image_folder / "truncated.png") in message and str(image_folder / "garbage.png") in message


def test_bad_rows_of_a_dataset_are_named_by_row():
    good = Dataset.from_dict({"image": [PILImage.new("RGB", (8, 8))] * 3}, features=Features({"image": Image()}))
    cells = list(good.cast_column("image", Image(decode=False))["image"])
    cells[1] = {"bytes": b"\x89PNG garbage", "path": None}
    images = Dataset.from_dict({"image": cells}, features=Features({"image": Image()}))
    with pytest.raises(ValueError, match=r"1 of 3 images cannot be read: row 1 \("):
        check_images(images, "fail")
    assert len(check_images(images, "skip", warn=False)[0]) == 2


def test_training_script_with_bad_images(image_folder, tmp_path, capsys):
    script = load_script()
    command = [
        "--config", str(TESTS.parent / "training" / "configs" / "quickstart.yaml"),
        f"data.source={image_folder}", "data.eval_split=null", "training.max_steps=2", "training.batch_size=2",
        "training.warmup_steps=0", "training.report_to=none", "model.image_size=16", "model.backbone_config.base_channels=8",
        "model.latent_dim=8", "model.codebook_size=16",
    ]
    with pytest.raises(ValueError, match="garbage.png .*truncated.png"):
        script.main([*command, f"training.output_dir={tmp_path / 'failed'}"])
    assert not (tmp_path / "failed" / "tokenizer").exists()

    out = tmp_path / "skipped"
    with pytest.warns(UserWarning, match="skipping 2 of 6 images"):
        script.main([*command, f"training.output_dir={out}", "data.on_bad_image=skip"])
    assert "skipped 2 unreadable image(s) of split 'train'" in capsys.readouterr().out
    dataset = json.loads((out / "tokenizer" / "config.json").read_text())["training_metadata"]["dataset"]
    assert dataset["skipped_images"] == {"train": 2} and dataset["num_train_images"] == 4
    assert dataset["on_bad_image"] == "skip"
