"""Streaming training (`data.streaming=true`): webdataset tar shards as a source (brace patterns,
globs, the image key, bad samples named by shard and key), each process's part of the stream, the
seeded block shuffle (every image once per epoch, a new order each epoch), a position that resumes
exactly (mid-block, across epochs, whatever the worker count), the trainer resuming a streamed run to
the weights of an uninterrupted one (one process here, two gloo processes stopped mid-shard below),
and the commands (`make_shards.py`, `train_tokenizer.py` on shards)."""

from __future__ import annotations

import copy
import io
import json
import tarfile
import traceback
from pathlib import Path

import pytest
import torch
from processes import run_processes
from safetensors.torch import load_file, save_file
from tiny_data import tiny_images

from vqtok.data import PixelTransform, load_image_dataset
from vqtok.data.tar_shards import expand_braces, shard_files
from vqtok.data.image_streams import open_image_stream, take_images, write_shards
from vqtok.training.streamed_data import StreamingImages

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


def make_shards(folder: Path, count: int = 24, per_shard: int = 6, seed: int = 0, prefix: str = "train") -> list[str]:
    cells = (row["image"] for row in tiny_images(count=count, seed=seed))
    return write_shards(cells, str(folder), per_shard, prefix=prefix)


def keys_of(stream: StreamingImages, count: int) -> list[str]:
    """The names of the next `count` images of a stream (its records, in order)."""
    records = stream._records()
    return [next(records).name for _ in range(count)]


def streaming(source, **options) -> StreamingImages:
    values = dict(split="train", transform=PixelTransform(16, 3, random_crop=True, random_flip=True), seed=0,
                  shuffle_buffer=5)
    return StreamingImages(str(source), **{**values, **options})


def test_brace_ranges_and_globs_name_the_shards(tmp_path):
    assert expand_braces("s/{08..11}.tar") == ["s/08.tar", "s/09.tar", "s/10.tar", "s/11.tar"]
    assert expand_braces("{1..2}/{0..1}.tar") == ["1/0.tar", "1/1.tar", "2/0.tar", "2/1.tar"]
    with pytest.raises(ValueError, match="runs backwards"):
        expand_braces("{3..1}.tar")
    files = make_shards(tmp_path, count=10, per_shard=4)
    assert [Path(f).name for f in files] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert shard_files(str(tmp_path / "train-{000000..000002}.tar")) == files == shard_files(str(tmp_path / "train-*.tar"))
    with pytest.raises(FileNotFoundError, match=r"no such shard\(s\): .*train-000003.tar"):
        shard_files(str(tmp_path / "train-{000000..000003}.tar"))
    with pytest.raises(FileNotFoundError, match="matches no tar file"):
        shard_files(str(tmp_path / "test-*.tar"))


def test_shards_hold_the_images_and_load_streamed_and_whole(tmp_path):
    make_shards(tmp_path, count=10, per_shard=4)
    originals = tiny_images(count=10)
    streamed = list(open_image_stream(str(tmp_path / "*.tar")))
    assert [row["__key__"] for row in streamed] == [f"{i:09d}" for i in range(10)]
    whole = load_image_dataset(str(tmp_path / "*.tar"))
    for index in (0, 9):
        expected = torch.tensor(list(originals[index]["image"].getdata()))
        assert torch.equal(torch.tensor(list(whole[index]["image"].getdata())), expected)
    assert len(take_images(open_image_stream(str(tmp_path / "*.tar")), 3)) == 3
    with pytest.raises(ValueError, match=r"no column 'jpg'.*\['png', '__key__', '__url__'\]"):
        open_image_stream(str(tmp_path / "*.tar"), image_column="jpg")


def test_every_image_once_per_epoch_in_a_new_order_and_each_process_its_own_part(tmp_path):
    make_shards(tmp_path, count=24, per_shard=6)  # 4 shards
    stream = streaming(tmp_path / "*.tar")
    names = keys_of(stream, 48)
    first, second = names[:24], names[24:]
    assert sorted(first) == sorted(second) and len(set(first)) == 24
    assert first != second  # a new shard order and new blocks each epoch
    # Two processes: whole shards each (4 shards), or every other image (3 shards); never shared, none lost.
    for count in (24, 18):
        folder = tmp_path / f"parts{count}"
        make_shards(folder, count=count, per_shard=6)
        parts = [keys_of(streaming(folder / "*.tar", num_processes=2, process_index=rank), count // 2) for rank in (0, 1)]
        assert not set(parts[0]) & set(parts[1]) and len(set(parts[0]) | set(parts[1])) == count


@pytest.mark.parametrize("stop_after", [1, 3, 7])  # mid-block, end of a block, in the second epoch
def test_the_position_resumes_exactly_whatever_the_workers(tmp_path, stop_after):
    make_shards(tmp_path, count=22, per_shard=6)
    reference = streaming(tmp_path / "*.tar").batches(3, num_workers=2)
    expected = [next(reference) for _ in range(10)]
    stopped = streaming(tmp_path / "*.tar")
    batches = stopped.batches(3)
    for _ in range(stop_after):
        next(batches)
    state = copy.deepcopy(stopped.state_dict())
    assert json.loads(json.dumps(state)) == state  # plain data: saved without pickle
    resumed = streaming(tmp_path / "*.tar")
    resumed.load_state_dict(state)
    batches = resumed.batches(3, num_workers=3)
    for index in range(stop_after, 10):
        assert torch.equal(next(batches), expected[index]), f"batch {index} differs after resuming at {stop_after}"
    with pytest.raises(ValueError, match="read by 1 process.*this run has 2"):
        streaming(tmp_path / "*.tar", num_processes=2).load_state_dict(state)


def _bad_shard(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "bad-000000.tar"
    good = io.BytesIO()
    tiny_images(count=1)[0]["image"].save(good, format="PNG")
    with tarfile.open(path, "w") as tar:
        for key, data in [("a", good.getvalue()), ("broken", b"not an image"), ("c", good.getvalue()), ("d", good.getvalue())]:
            member = tarfile.TarInfo(f"{key}.png")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


def test_a_bad_sample_is_named_by_shard_and_key_or_skipped_and_counted(tmp_path):
    path = _bad_shard(tmp_path / "shards")
    with pytest.raises(ValueError, match=rf"sample 'broken' of shard {path} cannot be read .*data.on_bad_image=skip"):
        next(streaming(path, shuffle_buffer=1).batches(2))
    skipping = streaming(path, shuffle_buffer=1, on_bad_image="skip")
    with pytest.warns(UserWarning, match="skipping an image: sample 'broken'"):
        batches = skipping.batches(3)
        assert next(batches).shape == (3, 3, 16, 16)
    assert skipping.skipped_images == 1


def test_bad_options_fail_before_reading(tmp_path):
    make_shards(tmp_path, count=4, per_shard=4)
    with pytest.raises(ValueError, match="shuffle_buffer must be a positive int, got 0"):
        streaming(tmp_path / "*.tar", shuffle_buffer=0)
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        streaming(tmp_path / "*.tar", on_bad_image="ignore")
    with pytest.raises(ValueError, match="process 1 of 2 got no images"):
        keys_of(streaming(write_shards([tiny_images(count=1)[0]["image"]], str(tmp_path / "one"), 1)[0],
                          num_processes=2, process_index=1), 1)


def _streamed_run(output_dir: Path, shards: Path, init_seed: int, max_steps: int, resume=None, processes=(1, 0)):
    from accelerate.utils import set_seed
    from test_training import tiny_args, tiny_config

    from vqtok import VQTokenizer
    from vqtok.training import train_tokenizer
    from vqtok.training.trainer import make_accelerator

    set_seed(init_seed)
    model = VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0))
    args = tiny_args(output_dir, max_steps=max_steps, batch_size=2, gradient_accumulation_steps=1, checkpoint_every=3,
                     resume_from_checkpoint=resume, num_workers=1)
    accelerator = make_accelerator(args)
    stream = streaming(shards / "*.tar", shuffle_buffer=4, num_processes=accelerator.num_processes,
                       process_index=accelerator.process_index)
    train_tokenizer(model, stream, None, args, accelerator)
    return model


def test_a_streamed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    from tiny_data import run_interrupted_after

    make_shards(tmp_path / "shards", count=14, per_shard=5)  # 3 shards, 7 steps of 2 images per epoch
    reference = _streamed_run(tmp_path / "straight", tmp_path / "shards", 0, 9)
    run_interrupted_after(3, monkeypatch, lambda: _streamed_run(tmp_path / "resumed", tmp_path / "shards", 0, 9))
    resumed = _streamed_run(tmp_path / "resumed", tmp_path / "shards", 123, 9, resume="latest")
    different = [name for name, tensor in reference.state_dict().items() if not torch.equal(tensor, resumed.state_dict()[name])]
    assert not different, f"tensors differ after resuming a streamed run: {different}"


def test_a_streamed_run_does_not_resume_an_in_memory_runs_checkpoint(tmp_path):
    from test_training import tiny_args, tiny_config

    from vqtok import VQTokenizer
    from vqtok.data import pixel_dataset
    from vqtok.training import train_tokenizer
    from vqtok.training.checkpoints import CheckpointError

    make_shards(tmp_path / "shards", count=8, per_shard=4)
    args = tiny_args(tmp_path / "run", max_steps=3, batch_size=2, gradient_accumulation_steps=1, checkpoint_every=3)
    train_tokenizer(VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0)), pixel_dataset(tiny_images(count=8), 16),
                    None, args)
    with pytest.raises(CheckpointError, match=r"it holds 2 loop state\(s\).*this run keeps 3 \(a streamed run adds"):
        _streamed_run(tmp_path / "run", tmp_path / "shards", 0, 6, resume="latest")


# --- two gloo processes ------------------------------------------------------------------------


def _worker(rank: int, port: int, out_dir: str) -> None:
    out = Path(out_dir)
    try:
        _run_rank(rank, port, out)
    except BaseException:
        (out / f"error_rank{rank}.txt").write_text(traceback.format_exc())
        raise


class _Stop(Exception):
    pass


def _run_rank(rank: int, port: int, out: Path) -> None:
    import os
    from datetime import timedelta

    import torch.distributed as dist

    import vqtok.training.trainer as trainer

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
    )
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    shards = out / "shards"
    straight = _streamed_run(out / "straight", shards, 0, 6)
    save = trainer.save_run_checkpoint

    def save_then_stop(accelerator, updates, args, step):
        save(accelerator, updates, args, step)
        raise _Stop  # a job killed right after its step-3 checkpoint: 3 images into a shard of 5 per process

    trainer.save_run_checkpoint = save_then_stop
    try:
        _streamed_run(out / "resumed", shards, 0, 6)
    except _Stop:
        pass
    trainer.save_run_checkpoint = save
    resumed = _streamed_run(out / "resumed", shards, 123, 6, resume="latest")
    for name, model in (("straight", straight), ("resumed", resumed)):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / f"{name}_rank{rank}.safetensors")
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_resume_a_stream_stopped_mid_shard_exactly(tmp_path):
    make_shards(tmp_path / "shards", count=20, per_shard=5)  # 4 shards: two whole shards per process
    run_processes(_worker, (str(tmp_path),), tmp_path, ["test_streaming", "test_training", "vqtok.training.trainer"])
    results = {(name, rank): load_file(tmp_path / f"{name}_rank{rank}.safetensors")
               for name in ("straight", "resumed") for rank in (0, 1)}
    reference = results[("straight", 0)]
    for key, state in results.items():
        different = [name for name in reference if not torch.equal(reference[name], state[name])]
        assert not different, f"{key} differs from the uninterrupted run on rank 0: {different}"
    position = torch.load(tmp_path / "resumed" / "checkpoints" / "step_3" / "custom_checkpoint_2.pkl", weights_only=True)
    assert [(p["epoch"], p["block"], p["taken"]) for p in position["positions"]] == [(0, 1, 2), (0, 1, 2)]


# --- the commands ------------------------------------------------------------------------------


def test_make_shards_then_train_on_them_streamed(tmp_path, capsys):
    from test_sampling import load_script

    written = load_script("make_shards").main(["--source", "sample", "--splits", "test", "--output",
                                               str(tmp_path / "shards"), "--samples_per_shard", "100"])
    assert [Path(f).name for f in written["test"]] == ["test-000000.tar", "test-000001.tar", "test-000002.tar"]
    assert "wrote 3 shard(s) of split 'test'" in capsys.readouterr().out
    script = load_script("train_tokenizer")
    common = ["--config", str(REPO / "training" / "configs" / "quickstart.yaml"), "data.streaming=true",
              f"data.source={tmp_path / 'shards' / 'test-{000000..000002}.tar'}", "training.max_steps=2",
              "training.batch_size=4", "training.report_to=none", f"training.output_dir={tmp_path / 'run'}"]
    with pytest.raises(ValueError, match="names tar shards, which hold one split: set data.eval_source"):
        script.main(common)
    results = script.main(common + [f"data.eval_source={tmp_path / 'shards' / 'test-*.tar'}", "data.eval_images=16"])
    assert "psnr" in results
    metadata = json.loads((tmp_path / "run" / "tokenizer" / "config.json").read_text())["training_metadata"]["dataset"]
    assert metadata["streaming"] is True and metadata["num_train_images"] is None
    assert metadata["skipped_images"] == {"train": 0, "test": 0}
