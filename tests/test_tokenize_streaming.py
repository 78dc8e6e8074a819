"""Streamed tokenization into Parquet shards (`tokenize_stream`): the same rows as the map-style
`tokenize_dataset` (bundled set, tar shards, an `IterableDataset`), readable with plain
`datasets.load_dataset("parquet")`; resuming after a crash keeps the finished shards without
encoding their images again; bad images named by shard and key; bad arguments refused before work."""

import io
import math
import os
import tarfile

import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, load_dataset
from PIL import Image as PILImage
from test_sampling import load_script
from tiny_data import tiny_images, tiny_tokenizer

from vqtok import TokenLayout, codes_from_dataset, load_tokenized, load_tokenized_shards, tokenize_dataset, tokenize_stream
from vqtok.data import load_image_dataset
from vqtok.data.image_streams import write_shards
from vqtok.tokens import stream_tokenization
from vqtok.tokens.parquet_shards import sharded_token_files
from vqtok.tokens.tokenization import BatchTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = dict(id_offset=100, bos_token_id=7, eos_token_id=200)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer(folder)
    return str(folder)


def png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def images_and_shards(folder, count: int = 7, per_shard: int = 3) -> tuple[Dataset, str]:
    """`count` tiny non-square images, and the same images in webdataset tar shards of `per_shard`;
    returns the images and the shards' brace pattern."""
    images = tiny_images(count=count, width=30, height=24)
    paths = write_shards(({"bytes": png_bytes(image), "path": None} for image in images["image"]), str(folder), per_shard)
    return images, os.path.join(str(folder), f"train-{{000000..{len(paths) - 1:06d}}}.tar")


def write_tar(path, files: dict[str, bytes]) -> None:
    """A webdataset tar shard holding `files` (name -> bytes) as they are (a bad image too)."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def count_encoded(monkeypatch) -> list[int]:
    """The stream rows `BatchTokenizer` is called on from now on (decoded and encoded)."""
    seen = []
    call = BatchTokenizer.__call__

    def counting(self, cells, indices, names=None):
        seen.extend(indices)
        return call(self, cells, indices, names)

    monkeypatch.setattr(BatchTokenizer, "__call__", counting)
    return seen


def crash_after(monkeypatch, shards: int) -> None:
    """Make the shard writer raise while finishing shard number `shards` (counted from 0)."""
    finish = stream_tokenization._ShardWriter.finish

    def finish_or_crash(self, progress):
        if progress["shard"] == shards:
            raise KeyboardInterrupt("killed")
        return finish(self, progress)

    monkeypatch.setattr(stream_tokenization._ShardWriter, "finish", finish_or_crash)


@pytest.mark.parametrize("split, rows_per_shard", [("test", 100), ("train", 800)])
def test_the_streamed_sample_set_equals_tokenize_dataset_row_for_row(tokenizer_dir, tmp_path, split, rows_per_shard):
    output = tmp_path / "tokens"
    result = tokenize_stream("sample", tokenizer_dir, output, split, rows_per_shard=rows_per_shard, batch_size=50, **LAYOUT)
    expected = tokenize_dataset(load_image_dataset("sample", split), tokenizer_dir, batch_size=50, **LAYOUT)
    shards = math.ceil(len(expected) / rows_per_shard)
    assert shards >= 3, "too few shards: test too weak"
    assert [os.path.basename(path) for path in result.files] == [f"{split}-{index:05d}.parquet" for index in range(shards)]
    assert [pq.read_metadata(path).num_rows for path in result.files] == (
        [rows_per_shard] * (shards - 1) + [len(expected) - rows_per_shard * (shards - 1)])
    assert (result.rows, result.images, result.skipped, result.reused) == (len(expected), len(expected), 0, 0)
    # Plain `datasets` reads the shards, with the same features and rows (the ClassLabel `source` kept).
    plain = load_dataset("parquet", data_files={split: result.files})[split]
    assert plain.features == expected.features and plain.column_names == ["source", "input_ids"]
    assert plain.to_dict() == expected.to_dict()
    assert sharded_token_files(output) == {split: result.files}
    loaded, layout = load_tokenized(output)  # sharded output read by the map-style reader too
    assert layout == TokenLayout(16, 4, 4, tokenizer=tokenizer_dir, **LAYOUT)
    assert loaded[split].to_dict() == expected.to_dict()
    assert codes_from_dataset(loaded[split], layout).unique().numel() > 3, "almost one code: test too weak"


def test_tar_shards_keep_their_keys_and_urls_and_the_command_writes_the_same(tokenizer_dir, tmp_path):
    images, pattern = images_and_shards(tmp_path / "shards")
    result = tokenize_stream(pattern, tokenizer_dir, tmp_path / "tokens", rows_per_shard=2, batch_size=4)
    expected = tokenize_dataset(images, tokenizer_dir, batch_size=4)
    tokens, _ = load_tokenized_shards(tmp_path / "tokens")
    rows = tokens["train"]
    assert rows.column_names == ["__key__", "__url__", "input_ids"] and len(result.files) == 4
    assert rows["input_ids"] == expected["input_ids"]
    assert rows["__key__"] == [f"{index:09d}" for index in range(7)]
    assert [os.path.basename(url) for url in rows["__url__"]] == [f"train-{index // 3:06d}.tar" for index in range(7)]
    # The command line: --streaming writes the same shards (a stale shard past the end is removed).
    (tmp_path / "cli" / "train").mkdir(parents=True)
    (tmp_path / "cli" / "train" / "train-00009.parquet").write_bytes(open(result.files[0], "rb").read())
    script = load_script("tokenize_dataset")
    written = script.main(["--streaming", "--source", pattern, "--splits", "train", "--rows_per_shard", "2",
                           "--batch_size", "4", "--tokenizer", tokenizer_dir, "--output", str(tmp_path / "cli")])
    assert written["train"].rows == 7 and len(written["train"].files) == 4
    assert sorted(os.listdir(tmp_path / "cli" / "train")) == [f"train-{index:05d}.parquet" for index in range(4)]
    assert load_tokenized(tmp_path / "cli")[0]["train"].to_dict() == rows.to_dict()


def test_an_interrupted_run_resumes_after_its_finished_shards(tokenizer_dir, tmp_path, monkeypatch):
    images, pattern = images_and_shards(tmp_path / "shards", count=11, per_shard=2)
    whole = tokenize_stream(pattern, tokenizer_dir, tmp_path / "whole", rows_per_shard=3, batch_size=2, eos_token_id=16)
    output = tmp_path / "tokens"
    crash_after(monkeypatch, shards=2)
    with pytest.raises(KeyboardInterrupt):
        tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=3, batch_size=2, eos_token_id=16)
    monkeypatch.undo()
    assert sorted(os.listdir(output / "train")) == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet.partial"]
    with pytest.raises(ValueError, match=r"split 'train' of .* is incomplete \(2 shard\(s\).*rerun"):
        load_tokenized_shards(output)
    finished = {name: os.stat(output / "train" / name).st_mtime_ns for name in ("train-00000.parquet", "train-00001.parquet")}
    with pytest.raises(ValueError, match=r"train-00000.parquet was written with other options \(rows_per_shard: 3 there, 4 now\)"):
        tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=4, batch_size=2, eos_token_id=16)
    with pytest.raises(ValueError, match=r"holds tokens of another layout \(eos_token_id: 16 there, 17 now\)"):
        tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=3, batch_size=2, eos_token_id=17)

    seen = count_encoded(monkeypatch)
    resumed = tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=3, batch_size=2, eos_token_id=16)
    assert seen == list(range(6, 11)), "the finished shards' images were encoded again"
    assert {name: os.stat(output / "train" / name).st_mtime_ns for name in finished} == finished
    assert (resumed.reused, resumed.rows, resumed.images) == (2, 11, 11)
    assert [os.path.basename(path) for path in resumed.files] == [os.path.basename(path) for path in whole.files]
    assert load_tokenized_shards(output)[0]["train"].to_dict() == load_tokenized_shards(tmp_path / "whole")[0]["train"].to_dict()
    assert load_tokenized_shards(output)[0]["train"]["input_ids"] == tokenize_dataset(images, tokenizer_dir, eos_token_id=16)["input_ids"]
    seen.clear()
    again = tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=3, batch_size=2, eos_token_id=16)
    assert seen == [] and again.reused == 4 and again.files == resumed.files  # a finished split is not read again


def test_a_bad_image_is_named_by_its_shard_and_key_and_skip_drops_it(tokenizer_dir, tmp_path):
    images = tiny_images(count=7, width=30, height=24)
    cells = {f"{index:09d}.png": png_bytes(image) for index, image in enumerate(images["image"])}
    cells["000000004.png"] = b"not an image at all"
    names = list(cells)
    write_tar(tmp_path / "train-000000.tar", {name: cells[name] for name in names[:3]})
    write_tar(tmp_path / "train-000001.tar", {name: cells[name] for name in names[3:]})
    pattern, output = str(tmp_path / "train-{000000..000001}.tar"), tmp_path / "tokens"
    with pytest.raises(ValueError, match=r"row 4 \(sample 000000004 of shard .*train-000001\.tar\): cannot read the image "
                                         r"\(.*\); pass on_bad_image='skip'"):
        tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=2, batch_size=2)
    assert sorted(os.listdir(output / "train"))[:2] == ["train-00000.parquet", "train-00001.parquet"]
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 images .*row 4 \(sample 000000004 of shard .*train-000001\.tar\)"):
        result = tokenize_stream(pattern, tokenizer_dir, output, rows_per_shard=2, batch_size=2, on_bad_image="skip")
    assert (result.rows, result.images, result.skipped, result.reused) == (6, 7, 1, 2)
    assert [pq.read_metadata(path).num_rows for path in result.files] == [2, 2, 1, 1]
    rows = load_tokenized_shards(output)[0]["train"]
    expected = tokenize_dataset(images, tokenizer_dir)["input_ids"]
    assert rows["__key__"] == [f"{index:09d}" for index in (0, 1, 2, 3, 5, 6)]
    assert rows["input_ids"] == [expected[index] for index in (0, 1, 2, 3, 5, 6)]
    # An image folder's bad file is named by its path.
    (tmp_path / "folder").mkdir()
    for name in names:
        (tmp_path / "folder" / name).write_bytes(cells[name])
    with pytest.raises(ValueError, match=r"row 4 \(file .*folder/000000004.png\): cannot read the image"):
        tokenize_stream(tmp_path / "folder", tokenizer_dir, tmp_path / "from_folder", rows_per_shard=3)


def test_an_iterable_dataset_keeps_its_columns_and_an_empty_one_gives_an_empty_split(tokenizer_dir, tmp_path):
    images = tiny_images(count=5).rename_column("image", "picture")
    images = images.add_column("label", [0, 1, 0, 1, 1]).cast_column("label", ClassLabel(names=["a", "b"]))
    result = tokenize_stream(images.to_iterable_dataset(num_shards=2), tokenizer_dir, tmp_path / "tokens", "val",
                             "picture", rows_per_shard=2, keep_image_column=True)
    rows = load_tokenized(tmp_path / "tokens")[0]["val"]
    expected = tokenize_dataset(images, tokenizer_dir, "picture", keep_image_column=True)
    assert rows.features == expected.features and len(result.files) == 3
    assert rows["input_ids"] == expected["input_ids"] and rows["label"] == expected["label"]
    assert [list(image.getdata()) for image in rows["picture"]] == [list(image.getdata()) for image in images["picture"]]
    empty = tokenize_stream(images.to_iterable_dataset().take(0), tokenizer_dir, tmp_path / "tokens", "empty", "picture")
    assert (empty.rows, len(empty.files)) == (0, 1)
    assert load_tokenized(tmp_path / "tokens")[0]["empty"].column_names == ["label", "input_ids"]
    streamed, _ = load_tokenized_shards(tmp_path / "tokens", streaming=True)
    assert [row["input_ids"] for row in streamed["val"]] == expected["input_ids"] and list(streamed["empty"]) == []


@pytest.mark.parametrize("arguments, error, message", [
    ({"rows_per_shard": 0}, ValueError, r"rows_per_shard must be a positive int, got 0"),
    ({"rows_per_shard": -5}, ValueError, r"rows_per_shard must be a positive int, got -5"),
    ({"rows_per_shard": 2.5}, ValueError, r"rows_per_shard must be a positive int, got 2.5"),
    ({"rows_per_shard": True}, ValueError, r"rows_per_shard must be a positive int, got True"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive int, got 0"),
    ({"on_bad_image": "ignore"}, ValueError, r"on_bad_image must be one of"),
    ({"split": "../train"}, ValueError, r"split must be a name of word characters"),
    ({"source": 3}, TypeError, r"source must be a source name / path or a datasets.IterableDataset, got int"),
])
def test_bad_arguments_are_refused_before_the_tokenizer_is_loaded(tmp_path, arguments, error, message):
    arguments = {"source": "sample", "tokenizer": str(tmp_path / "no_tokenizer"), "output": tmp_path / "out", **arguments}
    with pytest.raises(error, match=message):
        tokenize_stream(**arguments)
    assert not (tmp_path / "out").exists()


def test_bad_outputs_sources_and_launches_are_refused_before_any_image_is_encoded(tokenizer_dir, tmp_path, monkeypatch):
    tokenize_dataset(tiny_images(count=2), tokenizer_dir, save_to=tmp_path / "saved")
    monkeypatch.setattr(BatchTokenizer, "__call__", lambda *args, **kwargs: pytest.fail("tokenized before refusing"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match=r"output .*a_file' is a file, not a folder"):
        tokenize_stream("sample", tokenizer_dir, blocker, "test")
    with pytest.raises(ValueError, match="holds a dataset saved with save_to_disk"):
        tokenize_stream("sample", tokenizer_dir, tmp_path / "saved", "test")
    with pytest.raises(ValueError, match=r"the sample dataset has splits \['test', 'train'\], got split='validation'"):
        tokenize_stream("sample", tokenizer_dir, tmp_path / "out", "validation")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder' holds no image files"):
        tokenize_stream(tmp_path / "folder", tokenizer_dir, tmp_path / "out", "train")
    tiny_images(1)[0]["image"].save(tmp_path / "folder" / "0.png")
    with pytest.raises(ValueError, match=r"folder' has no split 'test' \(its splits: \['train'\]\)"):
        tokenize_stream(tmp_path / "folder", tokenizer_dir, tmp_path / "out", "test")
    with pytest.raises(FileNotFoundError, match="no such shard"):
        tokenize_stream(str(tmp_path / "train-{000..002}.tar"), tokenizer_dir, tmp_path / "out")
    with pytest.raises(ValueError, match=r"the stream already has an `input_ids` column"):
        tokenize_stream(Dataset.from_dict({"image": [None], "input_ids": [[1]]}).to_iterable_dataset(), tokenizer_dir,
                        tmp_path / "out")
    with pytest.raises(OSError, match="vqtok_tokens.json"):
        load_tokenized_shards(tmp_path)

    class TwoProcesses:
        num_processes = 2

    monkeypatch.setattr(stream_tokenization, "process_state", TwoProcesses)
    with pytest.raises(ValueError, match="tokenize_stream runs in one process, got 2"):
        tokenize_stream("sample", tokenizer_dir, tmp_path / "out", "test")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    (["--streaming", "--rows_per_shard", "0"], "--rows_per_shard must be at least 1, got 0"),
    (["--rows_per_shard", "10"], "--rows_per_shard sizes the Parquet shards of --streaming: pass --streaming too"),
    (["--streaming", "--num_proc", "2"], "--num_proc spreads a map-style dataset over worker processes"),
])
def test_the_command_refuses_bad_streaming_options(tmp_path, capsys, options, message):
    script = load_script("tokenize_dataset")
    with pytest.raises(SystemExit):
        script.main(options + ["--output", str(tmp_path / "out")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
