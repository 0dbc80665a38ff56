"""What the loop feeds the model: deterministic batches, per-sample seeds, padding collate, batch augmentation.

The batch drawn at iteration ``i`` is a pure function of ``(seed, i)`` (:class:`IterationBatchSampler`),
random dataset transforms run under a seed derived from ``(seed, i, index)`` (:class:`SeededSamples`) and
the batch augmentation under one derived from ``(seed, i)`` (:func:`augment_batch`), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Sampler

from hierars.training.seeding import mix_seed

__all__ = ["IterationBatchSampler", "SeededSamples", "pad_collate", "augment_batch", "subset"]


class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(iteration, index)`` keys for iterations ``start .. num_iterations-1``.

    The sample stream is the concatenation of per-epoch permutations of ``range(num_samples)``,
    epoch ``e`` drawn from a generator seeded with ``(seed, e)``; batch ``i`` is the slice
    ``[i*B, (i+1)*B)`` of that stream. No state: resuming at ``start`` reproduces the same batches.

    Sharded over ``world_size`` processes (``torchrun``), ``batch_size`` is per process: the global batch
    ``B = batch_size * world_size`` is drawn as above and process ``rank`` gets its ``rank``-th contiguous
    ``batch_size`` keys, so the processes together see exactly a single process's batches of size ``B``.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, num_iterations: int, start: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("the training dataset is empty")
        if not 0 <= start <= num_iterations:
            raise ValueError(f"start iteration {start} outside [0, {num_iterations}]")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.rank, self.world_size, self.local_batch = rank, world_size, batch_size
        batch_size = batch_size * world_size  # the global batch; batch_indices() returns all of it
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_iterations, self.start, self.shuffle = num_iterations, start, shuffle
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0x5A4D))
                self._perm = torch.randperm(self.num_samples, generator=gen)
            else:
                self._perm = torch.arange(self.num_samples)
            self._epoch = epoch
        return self._perm

    def batch_indices(self, iteration: int) -> list[int]:
        """Dataset indices of the global batch drawn at ``iteration`` (all processes' samples)."""
        n, out = self.num_samples, []
        for pos in range(iteration * self.batch_size, (iteration + 1) * self.batch_size):
            out.append(int(self._permutation(pos // n)[pos % n]))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo = self.rank * self.local_batch
        for it in range(self.start, self.num_iterations):
            yield [(it, idx) for idx in self.batch_indices(it)[lo : lo + self.local_batch]]

    def __len__(self) -> int:
        return self.num_iterations - self.start


class SeededSamples(Dataset):
    """Wraps a dataset so that ``ds[(iteration, index)]`` runs its random transforms under a seed that
    depends only on ``(seed, iteration, index)``; the global RNG states are restored afterwards."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        iteration, index = key
        s = mix_seed(self.seed, iteration, index)
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s % 2**32)  # noqa: NPY002
            random.seed(s)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)  # noqa: NPY002
                random.setstate(py_state)


def pad_collate(samples: Sequence[Mapping[str, Any]], multiple: int = 32, ignore_index: int = 255
                ) -> dict[str, Any]:
    """Stack dict samples, padding right/bottom to a common size that is a multiple of ``multiple``.

    Images pad with 0, masks with ``ignore_index`` (so padding never counts in loss or metrics).
    ``meta`` becomes a list of the samples' meta dicts (they may hold CRS/transform objects).

    Returns:
        {"image": B×C×H'×W' float, "mask": B×L×H'×W' int64, "meta": list[dict]}
    """
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    for key in ("image", "mask"):
        if key not in samples[0]:
            raise ValueError(f"samples must be dicts with 'image' and 'mask'; missing {key!r}")
    h = max(int(s["image"].shape[-2]) for s in samples)
    w = max(int(s["image"].shape[-1]) for s in samples)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    images, masks = [], []
    for s in samples:
        img, msk = torch.as_tensor(s["image"]), torch.as_tensor(s["mask"])
        if img.shape[-2:] != msk.shape[-2:]:
            raise ValueError(f"image {tuple(img.shape)} and mask {tuple(msk.shape)} differ in size")
        ph, pw = h - img.shape[-2], w - img.shape[-1]
        images.append(F.pad(img, (0, pw, 0, ph), value=0.0) if ph or pw else img)
        masks.append(F.pad(msk, (0, pw, 0, ph), value=ignore_index) if ph or pw else msk)
    return {"image": torch.stack(images), "mask": torch.stack(masks).long(),
            "meta": [s.get("meta", {}) for s in samples]}


def augment_batch(augment: nn.Module, image: torch.Tensor, mask: torch.Tensor, seed: int, iteration: int,
                  rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a batch augmentation under a CPU RNG seeded with ``(seed, iteration)`` (global state untouched).

    image B×C×H×W float, mask B×L×H×W int64 → same shapes. Runs on CPU tensors, before the device copy.
    With ``world_size > 1`` the batch is process ``rank``'s share of a global batch of ``B * world_size``: the
    augmentation runs on a global-size batch holding this share at its place (zeros elsewhere), so its random
    parameters, drawn per sample of the whole batch, are those a single process draws for these samples. Costs
    ``world_size`` times the augmentation work (flips, rotations and jitter are cheap next to a training step).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(seed, iteration, 0xA06))
        if world_size == 1:
            return augment(image, mask)
        b = image.shape[0]
        full_image = image.new_zeros((b * world_size, *image.shape[1:]))
        full_mask = mask.new_zeros((b * world_size, *mask.shape[1:]))
        full_image[rank * b : (rank + 1) * b], full_mask[rank * b : (rank + 1) * b] = image, mask
        out_image, out_mask = augment(full_image, full_mask)
        return out_image[rank * b : (rank + 1) * b], out_mask[rank * b : (rank + 1) * b]


def subset(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    return torch.utils.data.Subset(ds, list(range(n)))
