"""The training images as one endless, seeded stream, and the per-process batches drawn from it.

Draw `g` is image `perm_e[g mod n]` of epoch `e = g // n`, and its random crop/flip come from a
generator seeded with `(seed, g)`. Process `r` takes the `r`-th slice of every global micro-batch.
The data position is therefore one integer, the number of draws consumed, which makes resuming
exact whatever the number of data-loader workers.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..data import PixelTransform, collate_pixel_values
from .arguments import LoopArguments


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class SampleStream(torch.utils.data.Dataset):
    """The endless, seeded sequence of training samples, indexed by draw number.

    Draw `g` is row `perm_e[g % n]` of `dataset`, with `e = g // n` and `perm_e` a permutation
    seeded by `(seed, e)`. When `dataset` is viewed through a random `PixelTransform`
    (`pixel_dataset(..., augment=True)`), that image's crop and flip come from a generator seeded
    by `(seed, g)`; any other dataset's rows are returned as it gives them.
    """

    def __init__(self, dataset, seed: int):
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.size = len(dataset)
        self.seed = int(seed)
        transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
        self.transform = transform if isinstance(transform, PixelTransform) and transform.is_random else None
        # Rows are read raw and transformed here, one generator per image.
        self.rows = dataset.with_format(None) if self.transform is not None else dataset
        self._epoch, self._permutation = -1, None

    def index(self, draw: int) -> int:
        """Row of `dataset` that draw number `draw` reads."""
        epoch, position = divmod(int(draw), self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0))
            self._epoch, self._permutation = epoch, torch.randperm(self.size, generator=generator).tolist()
        return self._permutation[position]

    def __getitem__(self, draw: int) -> dict:
        return self.__getitems__([draw])[0]

    def __getitems__(self, draws: list[int]) -> list[dict]:
        """The rows of several draws (the DataLoader fetches a batch through this, so the images of a
        batch go through the image processor together)."""
        rows = [self.rows[self.index(draw)] for draw in draws]
        if self.transform is None:
            return rows
        generators = [torch.Generator().manual_seed(mix_seed(self.seed, draw, 1)) for draw in draws]
        pixels = self.transform.images_to_tensors([row["image"] for row in rows], generators)
        return [{"pixel_values": tensor} for tensor in pixels]


class ProcessBatches(torch.utils.data.Sampler):
    """Endless batches of draw numbers for one process: global micro-batch `m` covers draws
    `start + m*B*P ... start + (m+1)*B*P - 1` (B = batch size, P = processes), and process `r`
    takes its `r`-th slice of `B` draws."""

    def __init__(self, start: int, batch_size: int, num_processes: int = 1, process_index: int = 0):
        self.start, self.batch_size = start, batch_size
        self.num_processes, self.process_index = num_processes, process_index

    def __iter__(self):
        draw = self.start + self.process_index * self.batch_size
        while True:
            yield list(range(draw, draw + self.batch_size))
            draw += self.batch_size * self.num_processes


def training_batches(
    stream: SampleStream, start: int, args: LoopArguments, accelerator: Accelerator, collate_fn=collate_pixel_values
):
    """Endless iterator of this process's batches (`collate_fn` of the rows; default: `pixel_values`
    `[B, C, S, S]`), starting at draw `start`."""
    loader = DataLoader(
        stream,
        batch_sampler=ProcessBatches(start, args.batch_size, accelerator.num_processes, accelerator.process_index),
        collate_fn=collate_fn,
        num_workers=args.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        # A private generator: creating the iterator must not consume the global RNG that the
        # model's own randomness (restored on resume) draws from.
        generator=torch.Generator().manual_seed(args.seed),
    )
    for batch in loader:
        yield batch.to(accelerator.device, non_blocking=True)
