"""Dataset tokenization: the stored tokens decode like decode(encode(image)) through the tokenizer's
saved processor, num_proc and several Accelerate processes give the same rows as one process, the
BOS/EOS/offset layout, unreadable images reported by row (skip or fail), save -> load, bad input."""

import io
import os
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from processes import run_processes
from tiny_data import tiny_images, tiny_tokenizer

from vqtok import TokenLayout, VQImageProcessor, VQTokenizer, codes_from_dataset, load_tokenized, tokenize_dataset
from vqtok.tokens.tokenization import BatchTokenizer, process_state

pytestmark = pytest.mark.usefixtures("one_thread")
WORLD_SIZE = 2


def labelled_images(count: int = 12) -> Dataset:
    """Tiny non-square images with a label column, so kept columns and row order can be checked."""
    images = tiny_images(count=count, width=30, height=24)  # resized to 16 on the short side
    return images.add_column("label", [i % 3 for i in range(count)]).cast_column(
        "label", ClassLabel(names=["a", "b", "c"])
    )


def png_bytes(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tiny tokenizer saved with a processor that differs from the default one (nearest-neighbour
    resizing), so that using the saved processor is visible."""
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer(folder)
    VQImageProcessor.for_image_size(16, resample=PILImage.Resampling.NEAREST).save_pretrained(folder)
    return folder


def test_stored_tokens_decode_like_the_tokenizer_on_the_saved_processor(tokenizer_dir):
    images = labelled_images()
    tokens = tokenize_dataset(images, str(tokenizer_dir))
    model = VQTokenizer.from_pretrained(tokenizer_dir)
    saved = VQImageProcessor.from_pretrained(tokenizer_dir)
    pixels = saved(list(images["image"]), return_tensors="pt")["pixel_values"]
    layout = TokenLayout.for_tokenizer(model)
    stored = codes_from_dataset(tokens, layout)
    assert torch.equal(stored, model.encode(pixels))
    assert torch.equal(model.decode(stored), model.decode(model.encode(pixels)))
    default = VQImageProcessor.for_image_size(16)(list(images["image"]), return_tensors="pt")["pixel_values"]
    assert not torch.equal(model.encode(default), stored), "the saved processor made no difference: test too weak"
    assert len(torch.unique(stored)) > 3, "the tokenizer gives almost one code: test too weak"
    # The other columns are kept, in order; the images are dropped unless asked for.
    assert tokens.column_names == ["label", "input_ids"]
    assert tokens["label"] == images["label"]
    kept = tokenize_dataset(images, str(tokenizer_dir), keep_image_column=True)
    assert isinstance(kept[0]["image"], PILImage.Image) and kept["input_ids"] == tokens["input_ids"]


def test_num_proc_two_gives_the_same_rows_as_one(tokenizer_dir, tmp_path):
    images = labelled_images(count=10)
    images.save_to_disk(tmp_path / "images")  # Arrow files on disk, as a real dataset
    from datasets import load_from_disk

    on_disk = load_from_disk(str(tmp_path / "images"))
    one = tokenize_dataset(on_disk, str(tokenizer_dir), batch_size=3, bos_token_id=16)
    two = tokenize_dataset(on_disk, str(tokenizer_dir), batch_size=3, bos_token_id=16, num_proc=2)
    assert one.to_dict() == two.to_dict()
    assert len(one) == 10


def test_offset_bos_and_eos_placement(tokenizer_dir):
    images = labelled_images(count=4)
    plain = tokenize_dataset(images, str(tokenizer_dir))
    framed = tokenize_dataset(images, str(tokenizer_dir), id_offset=100, bos_token_id=7, eos_token_id=200)
    for codes, row in zip(plain["input_ids"], framed["input_ids"]):
        assert len(codes) == 16 and len(row) == 18
        assert row[0] == 7 and row[-1] == 200
        assert row[1:-1] == [c + 100 for c in codes]
    layout = TokenLayout.for_tokenizer(VQTokenizer.from_pretrained(tokenizer_dir),
                                       id_offset=100, bos_token_id=7, eos_token_id=200)
    assert layout.sequence_length == 18
    assert torch.equal(codes_from_dataset(framed, layout), torch.tensor(plain["input_ids"]).reshape(-1, 4, 4))
    empty = tokenize_dataset(images.select([]), str(tokenizer_dir), bos_token_id=16)
    assert len(empty) == 0 and empty.column_names == ["label", "input_ids"]
    # Row-major order: the layout flattens [h, w] rows first.
    grid = torch.arange(16).reshape(1, 4, 4)
    assert layout.to_sequences(grid)[0, 1:5].tolist() == [100, 101, 102, 103]


def test_layout_rejects_ids_that_do_not_fit():
    layout = TokenLayout(16, 4, 4, id_offset=100, bos_token_id=7, eos_token_id=200)
    good = layout.to_sequences(torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"bos_token_id=110 lies among the image token ids \[100, 116\)"):
        TokenLayout(16, 4, 4, id_offset=100, bos_token_id=110)
    with pytest.raises(ValueError, match="must differ"):
        TokenLayout(16, 4, 4, bos_token_id=20, eos_token_id=20)
    bad_bos = good.clone()
    bad_bos[1, 0] = 8
    with pytest.raises(ValueError, match="row 1 has id 8 where bos_token_id=7 belongs"):
        layout.to_codes(bad_bos)
    out_of_range = good.clone()
    out_of_range[0, 3] = 116
    with pytest.raises(ValueError, match=r"image token ids must lie in \[100, 116\).*got values in \[100, 116\]"):
        layout.to_codes(out_of_range)
    with pytest.raises(ValueError, match=r"shape \[B, 18\]"):
        layout.to_codes(good[:, :-1])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        layout.to_sequences(torch.full((1, 4, 4), 16))
    with pytest.raises(ValueError, match=r"shape \[B, 4, 4\] or \[B, 16\]"):
        layout.to_sequences(torch.zeros(1, 5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer dtype"):
        layout.to_sequences(torch.zeros(1, 4, 4))


def corrupted(images: Dataset, bad_rows: dict[int, bytes]) -> Dataset:
    """`images` with the image bytes of some rows replaced (undecodable files)."""
    cells = [{"bytes": bad_rows.get(i, png_bytes(image)), "path": None} for i, image in enumerate(images["image"])]
    return Dataset.from_dict({"image": cells, "label": images["label"]},
                             features=Features({"image": Image(), "label": images.features["label"]}))


def test_unreadable_images_are_reported_with_their_row(tokenizer_dir):
    images = labelled_images(count=8)
    truncated = png_bytes(images[5]["image"])[:60]
    broken = corrupted(images, {2: b"not an image at all", 5: truncated})
    with pytest.raises(ValueError, match=r"row 2: cannot read the image .*on_bad_image='skip'"):
        tokenize_dataset(broken, str(tokenizer_dir), batch_size=4)
    with pytest.warns(UserWarning, match=r"skipped 2 of 8 images .*row 2: cannot read.*; row 5: cannot read"):
        kept = tokenize_dataset(broken, str(tokenizer_dir), batch_size=4, on_bad_image="skip")
    whole = tokenize_dataset(images, str(tokenizer_dir), batch_size=4)
    keep = [0, 1, 3, 4, 6, 7]
    assert kept["label"] == [images["label"][i] for i in keep]
    assert kept["input_ids"] == [whole["input_ids"][i] for i in keep]
    # Under num_proc the rows keep their global index.
    with pytest.warns(UserWarning, match="row 5: cannot read"):
        tokenize_dataset(broken, str(tokenizer_dir), batch_size=2, num_proc=2, on_bad_image="skip")


def test_bad_input_raises_clear_errors(tokenizer_dir):
    images = labelled_images(count=2)
    with pytest.raises(ValueError, match=r"no column 'picture' \(image_column\); columns: \['image', 'label'\]"):
        tokenize_dataset(images, str(tokenizer_dir), image_column="picture")
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        tokenize_dataset(images, str(tokenizer_dir), on_bad_image="ignore")
    with pytest.raises(TypeError, match="datasets.Dataset"):
        tokenize_dataset({"image": []}, str(tokenizer_dir))
    with pytest.raises(ValueError, match="already has an `input_ids` column"):
        tokenize_dataset(images.add_column("input_ids", [[0], [1]]), str(tokenizer_dir))
    with pytest.raises(ValueError, match="lies among the image token ids"):
        tokenize_dataset(images, str(tokenizer_dir), bos_token_id=3)
    wrong = VQImageProcessor.for_image_size(32)
    with pytest.raises(ValueError, match="the image processor gives 32x32 images .* expects 16x16"):
        tokenize_dataset(images, str(tokenizer_dir), processor=wrong)
    with pytest.raises(OSError):
        tokenize_dataset(images, str(tokenizer_dir / "missing"))


def test_save_and_load_tokenized(tokenizer_dir, tmp_path):
    tokens = tokenize_dataset(labelled_images(count=5), str(tokenizer_dir), bos_token_id=16, save_to=tmp_path / "tok")
    loaded, layout = load_tokenized(tmp_path / "tok")
    assert loaded.to_dict() == tokens.to_dict()
    assert layout == TokenLayout(16, 4, 4, bos_token_id=16, tokenizer=str(tokenizer_dir))
    assert codes_from_dataset(loaded, layout).shape == (5, 4, 4)
    with pytest.raises(OSError, match="vqtok_tokens.json"):
        load_tokenized(tokenizer_dir)
    with pytest.raises(ValueError, match=r"every row of 'input_ids' must have 17 ids, got lengths \[15, 16\]"):
        codes_from_dataset(Dataset.from_dict({"input_ids": [[1] * 16, [2] * 15]}), TokenLayout(16, 4, 4, bos_token_id=16))


def test_images_as_arrays_and_paths_are_read_too(tokenizer_dir, tmp_path):
    images = labelled_images(count=3)
    paths = []
    for i, image in enumerate(images["image"]):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    expected = tokenize_dataset(images, str(tokenizer_dir))["input_ids"]
    from_paths = Dataset.from_dict({"image": paths})
    assert tokenize_dataset(from_paths, str(tokenizer_dir))["input_ids"] == expected
    arrays = Dataset.from_dict({"image": [np.asarray(image) for image in images["image"]]})
    assert tokenize_dataset(arrays, str(tokenizer_dir))["input_ids"] == expected
    assert tokenize_dataset(arrays.with_format("numpy"), str(tokenizer_dir)).with_format(None)["input_ids"] == expected


# --- two Accelerate processes ---------------------------------------------------------------
def _worker(rank: int, port: int, tokenizer: str, out_dir: str) -> None:
    try:
        import json

        import torch.distributed as dist

        torch.set_num_threads(1)
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
            WORLD_SIZE=str(WORLD_SIZE), LOCAL_WORLD_SIZE=str(WORLD_SIZE), ACCELERATE_USE_CPU="true",
        )
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                                timeout=timedelta(seconds=60))
        assert process_state().num_processes == WORLD_SIZE
        seen = []
        call = BatchTokenizer.__call__

        def counting(self, cells, indices):
            seen.extend(self.row_offset + i for i in indices)
            return call(self, cells, indices)

        BatchTokenizer.__call__ = counting
        tokens = tokenize_dataset(labelled_images(count=11), tokenizer, batch_size=4, eos_token_id=16,
                                  save_to=Path(out_dir) / "saved")
        result = {"rows": tokens.to_dict(), "seen": seen}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:
        (Path(out_dir) / f"error_rank{rank}.txt").write_text(traceback.format_exc())
        raise


def test_two_accelerate_processes_each_take_their_shard_and_gather_in_order(tokenizer_dir, tmp_path):
    import json

    run_processes(_worker, (str(tokenizer_dir), str(tmp_path)), tmp_path, ["test_tokenization"], WORLD_SIZE)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert sorted(ranks[0]["seen"]) == list(range(0, 6)) and sorted(ranks[1]["seen"]) == list(range(6, 11))
    single = tokenize_dataset(labelled_images(count=11), str(tokenizer_dir), batch_size=4, eos_token_id=16)
    assert ranks[0]["rows"] == ranks[1]["rows"] == single.to_dict()
    saved, _ = load_tokenized(tmp_path / "saved")
    assert saved.to_dict() == single.to_dict()
