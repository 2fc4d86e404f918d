"""The training stream: which image, and which random augmentation, as a pure function of (seed, position)."""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.data.utils import set_rnd
from monai.transforms import Randomizable
from torch.utils.data import Dataset


def position_seed(seed: int, rank: int, position: int) -> int:
    """A 32-bit seed for one sample of one process's stream."""
    return int(np.random.SeedSequence([seed, rank, position]).generate_state(1)[0])


class TrainingStream(Dataset):
    """Every training sample of a run, in order: item ``j`` is sample ``start + j`` of the whole run.

    Sample ``p`` is image ``perm_k[p % n]`` of pass ``k = p // n`` (a permutation seeded by ``(seed, rank, k)``),
    and the dataset's random transforms are reseeded with ``(seed, rank, p)`` before it is drawn. So the batches of
    iteration ``i`` are the same whether the run was interrupted or not, with any number of loader workers,
    and a resumed run only needs its iteration count: no shuffle order or transform random state to pickle.
    (torch's shuffling draws from the global RNG once per pass, and MONAI seeds each worker's transforms
    once per loader, so both depend on the run's history.)

    Args:
        dataset: the training items with their (random) transform.
        seed: the run's seed.
        length: samples in the whole run (epochs x steps x batch size).
        start: samples already drawn (iterations done x batch size) when resuming.
        rank: the process's rank under torchrun (its shard draws its own augmentations).
    """

    def __init__(self, dataset: Dataset, seed: int, length: int, start: int = 0, rank: int = 0) -> None:
        self.dataset, self.seed, self.length, self.start, self.rank = dataset, seed, length, start, rank
        self.n = len(dataset)  # type: ignore[arg-type]
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return max(0, self.length - self.start)

    def index(self, position: int) -> int:
        """The dataset index of sample ``position``."""
        k = position // self.n
        if self._perm is None or self._perm[0] != k:
            self._perm = (k, np.random.default_rng([self.seed, self.rank, k]).permutation(self.n))
        return int(self._perm[1][position % self.n])

    def __getitem__(self, j: int) -> Any:
        position = self.start + j
        seed = position_seed(self.seed, self.rank, position)
        transform = getattr(self.dataset, "transform", None)
        if isinstance(transform, Randomizable):
            transform.set_random_state(seed=seed)
        else:  # MONAI's generic walk; not the default, as it visits every cached item's attributes
            set_rnd(self.dataset, seed)
        return self.dataset[self.index(position)]
