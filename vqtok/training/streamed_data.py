"""Training images streamed from a source too large to load (`data.streaming=true`), resumable exactly.

Each process reads its own part of the source (`datasets.distributed.split_dataset_by_node`: whole
shards when the shard count divides evenly by the process count, every P-th image otherwise). A
local source (tar shards, an image folder) is read in a new seeded order of its files every epoch;
a Hub dataset in its own order. The images then pass a seeded block shuffle: `shuffle_buffer`
consecutive images are read and given out in a random order drawn from `(seed, process, epoch,
block)`.

Why blocks rather than a sliding shuffle buffer: the position in the stream is then small and
exact: the epoch, the block, the images of it already given out, and the source's
`IterableDataset.state_dict()` at the block's start. A checkpoint holds this position for every
process; a resumed run reopens the source at the block's start, reads the block again, draws the
same order and skips what was given out, so it sees the images an uninterrupted run would, in the
same order, with the same random crops and flips (drawn per image from `(seed, process, epoch,
block, index)`). The cost: one block read again per resume.

Images are decoded, resized and augmented by `num_workers` threads ahead of the training step
(PIL's decoders and resamplers release the GIL); the order of the images does not depend on them.
An image that cannot be read stops the run naming it (its shard and key, or its file), or with
`on_bad_image="skip"` is passed over with a warning and counted in `skipped_images`.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import torch
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node

from ..data import PixelTransform, check_on_bad_image, read_image
from ..data.image_streams import file_changes, file_records, open_image_stream, source_files
from ..parallel.collectives import gather_json
from ..validation import check_positive_int
from .in_memory_data import mix_seed

# Images decoded ahead of the training step, per worker thread.
PREFETCH_PER_WORKER = 4
STATE_FORMAT = 1


@dataclass
class StreamPosition:
    """Where one process stands in its stream: the next image is number `taken` (in the block's
    shuffled order) of block `block` of epoch `epoch`, whose first image the source gives after
    `block_state` (None: the epoch's start). `skipped_images` counts the unreadable images passed
    over so far."""

    epoch: int = 0
    block: int = 0
    taken: int = 0
    block_state: dict | None = None
    skipped_images: int = 0


@dataclass
class _Record:
    cell: dict
    name: str
    position: StreamPosition  # the position once this image is taken
    seed: int


class StreamingImages:
    """An endless, seeded, resumable stream of one process's training images (see the module
    docstring), registered for checkpointing (`state_dict` / `load_state_dict`, collective: every
    process calls them together).

    Args:
        source / split / image_column: what `vqtok.data.image_streams.open_image_stream` reads.
        transform: turns each image into `pixel_values` (its random crop and flip seeded per image).
        seed: the run's seed.
        shuffle_buffer: images per shuffled block (1: the source's order).
        on_bad_image: `"fail"` or `"skip"`.
        num_processes / process_index: this process's share of the source.
        open_stream: opens the stream of an epoch given its files (tests; default `open_image_stream`).
        files: the local source's files to read (default: all of the split's, `source_files`; a
            folder's training split without the images it holds out for evaluation).

    A checkpoint records the files read (names and sizes), and a resume on other files (a shard added
    to the glob, one gone, one rewritten) is refused, naming them: it would read images again and
    leave others out, without a word.
    """

    def __init__(
        self,
        source: str,
        split: str,
        transform: PixelTransform,
        seed: int,
        shuffle_buffer: int = 1000,
        image_column: str = "image",
        on_bad_image: str = "fail",
        num_processes: int = 1,
        process_index: int = 0,
        open_stream: Callable[..., IterableDataset] = open_image_stream,
        files: list[str] | None = None,
    ):
        check_on_bad_image(on_bad_image)
        check_positive_int("shuffle_buffer", shuffle_buffer)
        self.source, self.split, self.image_column = source, split, image_column
        self.transform, self.seed, self.shuffle_buffer = transform, int(seed), shuffle_buffer
        self.on_bad_image = on_bad_image
        self.num_processes, self.process_index = num_processes, process_index
        self.open_stream = open_stream
        self.files = files if files is not None else source_files(source, split)
        self.position = StreamPosition()
        self._epoch_stream(0)  # a bad source, split or column fails here, before training

    @property
    def skipped_images(self) -> int:
        """Unreadable images this process has passed over (`on_bad_image="skip"`)."""
        return self.position.skipped_images

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Every process's position (a collective), and the files read."""
        return {"format": STATE_FORMAT, "positions": gather_json(asdict(self.position)),
                "files": file_records(self.files) if self.files is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Take this process's position from a checkpoint written by as many processes, reading the
        same files (a checkpoint of vqtok 0.3.0 before files were recorded is taken as it is)."""
        positions = state.get("positions") if isinstance(state, dict) else None
        if state.get("format") != STATE_FORMAT or not isinstance(positions, list):
            raise ValueError(f"the checkpoint's stream position has an unknown format: {state!r:.200}")
        if len(positions) != self.num_processes:
            raise ValueError(
                f"the checkpoint's stream was read by {len(positions)} process(es), this run has {self.num_processes}: "
                "a streamed run resumes exactly only on the process count that wrote the checkpoint"
            )
        recorded = state.get("files")
        changes = file_changes(recorded, file_records(self.files)) if recorded is not None and self.files else ""
        if changes:
            raise ValueError(
                f"the checkpoint's stream read other files than data.source {self.source!r} names now ({changes}): a "
                "resumed run would read images again and leave others out; put the files back as they were, or start "
                "the run afresh in another training.output_dir"
            )
        self.position = StreamPosition(**positions[self.process_index])

    # --- reading -------------------------------------------------------------------------------
    def _epoch_stream(self, epoch: int) -> IterableDataset:
        """This process's part of the source, its files in the order of `epoch`."""
        files = None
        if self.files is not None:
            order = torch.randperm(len(self.files), generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, 2)))
            files = [self.files[index] for index in order.tolist()]
        stream = self.open_stream(self.source, split=self.split, image_column=self.image_column,
                                  **({"files": files} if files is not None else {}))
        if self.num_processes > 1:
            stream = split_dataset_by_node(stream, rank=self.process_index, world_size=self.num_processes)
        return stream

    def _records(self) -> Iterator[_Record]:
        """The images from `self.position` on, each with the position after it."""
        epoch, block, taken, block_state = (self.position.epoch, self.position.block, self.position.taken,
                                            self.position.block_state)
        while True:
            stream = self._epoch_stream(epoch)
            if block_state is not None:
                stream.load_state_dict(copy.deepcopy(block_state))
            iterator, first, read_any = iter(stream), True, block > 0
            while True:
                if not first:  # the source's live state, once it has been read from
                    block_state = copy.deepcopy(stream.state_dict())
                first = False
                rows = list(itertools.islice(iterator, self.shuffle_buffer))
                if not rows:
                    break
                read_any = True
                generator = torch.Generator().manual_seed(mix_seed(self.seed, self.process_index, epoch, block, 3))
                order = torch.randperm(len(rows), generator=generator).tolist()
                for index in range(taken, len(rows)):
                    row = rows[order[index]]
                    yield _Record(row["image"], _describe(row, epoch, block, order[index]),
                                  StreamPosition(epoch, block, index + 1, block_state),
                                  mix_seed(self.seed, self.process_index, epoch, block, index, 1))
                block, taken = block + 1, 0
                if len(rows) < self.shuffle_buffer:
                    break
            if not read_any:
                raise ValueError(
                    f"process {self.process_index} of {self.num_processes} got no images from {self.source!r} "
                    f"(split {self.split!r}) in epoch {epoch}: the source is empty or has fewer images than processes"
                )
            epoch, block, block_state = epoch + 1, 0, None

    def _decode(self, record: _Record) -> torch.Tensor | None:
        """The record's `pixel_values`; None for an unreadable image with `on_bad_image="skip"`."""
        try:
            image = read_image(record.cell)
        except Exception as error:  # noqa: BLE001 - any unreadable image is reported
            message = f"{record.name} cannot be read ({type(error).__name__}: {error})"
            if self.on_bad_image == "fail":
                raise ValueError(f"{message}; remove it, or set data.on_bad_image=skip to train without it") from None
            warnings.warn(f"skipping an image: {message}", stacklevel=2)
            return None
        generator = torch.Generator().manual_seed(record.seed)
        return self.transform.images_to_tensors([image], [generator])[0]

    def _decoded(self, num_workers: int) -> Iterator[tuple[torch.Tensor | None, _Record]]:
        records = self._records()
        if num_workers == 0:
            for record in records:
                yield self._decode(record), record
            return
        with ThreadPoolExecutor(num_workers, thread_name_prefix="vqtok-images") as pool:
            pending = deque()
            for record in records:
                pending.append((pool.submit(self._decode, record), record))
                if len(pending) >= num_workers * PREFETCH_PER_WORKER:
                    future, done = pending.popleft()
                    yield future.result(), done

    def batches(self, batch_size: int, num_workers: int = 0, device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
        """Endless `pixel_values` batches `[batch_size, C, S, S]` on `device`; the stream's position
        (with its count of skipped images) moves past a batch's images when the batch is handed out."""
        pixels, skipped = [], 0
        for tensor, record in self._decoded(num_workers):
            if tensor is None:
                skipped += 1
                continue
            pixels.append(tensor)
            if len(pixels) == batch_size:
                self.position = replace(record.position, skipped_images=self.position.skipped_images + skipped)
                yield torch.stack(pixels).to(device, non_blocking=True)
                pixels, skipped = [], 0


def _describe(row: dict, epoch: int, block: int, index: int) -> str:
    """How an image is named in messages: its shard and key, its file, or its place in the stream."""
    if row.get("__url__") is not None:
        return f"sample {row.get('__key__')!r} of shard {row['__url__']}"
    path = row["image"].get("path") if isinstance(row["image"], dict) else None
    return f"file {path}" if path else f"image {index} of block {block} of epoch {epoch}"
