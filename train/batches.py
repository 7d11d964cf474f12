"""Deterministic batches: which examples a step trains on is a pure function of (seed, step).

That makes resume exact without saving a data-loader state: a run resumed at step s draws the
same examples (and the same per-example augmentation seeds) as the uninterrupted run did.
Examples are visited epoch by epoch (a fresh permutation per epoch), and each rank takes its own
slice of the global micro-batch, so ranks never see the same example in one step.
"""

from __future__ import annotations

from typing import Iterator

import torch

_MASK64 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (SplitMix64-style mixing, stable across runs)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h ^= (int(p) + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2)) & 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & _MASK64


def step_generator(seed: int, step: int, micro: int, rank: int, device="cpu") -> torch.Generator:
    """The generator for a micro-step's noise, sigmas and masks on one rank."""
    g = torch.Generator(device=device)
    g.manual_seed(mix_seed(seed, 1, step, micro, rank))
    return g


class StepBatchSampler:
    """Yields, for each micro-step from `start_step` on, this rank's list of (index, item_seed).

    Global position p = ((step * accum + micro) * world + rank) * batch + j; the example at p is
    perm_epoch[p % n] with epoch = p // n, and its augmentation seed is mix(seed, p).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 accum: int = 1, start_step: int = 0, num_steps: int | None = None):
        if num_items <= 0:
            raise ValueError("StepBatchSampler needs at least one item")
        self.n = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.accum = accum
        self.start_step = start_step
        self.num_steps = num_steps
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _index(self, p: int) -> int:
        epoch = p // self.n
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, 2, epoch))
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm[p % self.n]

    def batch(self, step: int, micro: int) -> list[tuple[int, int]]:
        base = ((step * self.accum + micro) * self.world + self.rank) * self.batch_size
        return [(self._index(base + j), mix_seed(self.seed, 3, base + j)) for j in range(self.batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.num_steps is None or step < self.num_steps:
            for micro in range(self.accum):
                yield self.batch(step, micro)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("infinite sampler")
        return (self.num_steps - self.start_step) * self.accum


class SeededDataset(torch.utils.data.Dataset):
    """Adapts a dataset whose items take (index, generator) to keys (index, item_seed)."""

    def __init__(self, get_item, length: int):
        self.get_item = get_item
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key):
        index, seed = key
        g = torch.Generator().manual_seed(int(seed))
        return self.get_item(int(index), g)
