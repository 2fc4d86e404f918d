"""Test-time augmentation: a run's predictions averaged over draws of its regime's random part (``evaluate --tta N``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from monai.data import Dataset
from monai.transforms import Compose

from mai_aug.data.loader import IndexedDataset
from mai_aug.stats.paired import score_regimes, summary_table
from mai_aug.transforms.batched import BatchedStage, compile_regime
from mai_aug.transforms.shifts import BatchShiftFn

logger = logging.getLogger("mai_aug")

if TYPE_CHECKING:  # evaluate.py imports this module
    from mai_aug.analyses.trained_run import TrainedRun


class SeededDataset(Dataset):
    """Items of ``data`` through a random ``transform`` re-seeded by (``draw``, item index) before each item.

    Seeding per item (not one generator running through the split) makes draw ``k`` of image ``i`` the same in
    every run and with any number of loader workers, so regimes with the same random part see the same draws.
    """

    def __init__(self, data: Sequence, transform: Compose, draw: int) -> None:
        super().__init__(data, transform)
        self.draw = draw

    def _transform(self, index: int):
        seed = int(np.random.SeedSequence([self.draw, int(index)]).generate_state(1)[0])
        self.transform.set_random_state(seed=seed)
        return super()._transform(index)


#: Images per batch of the device path: each batch's draws are seeded by (draw, its first image's index), so with
#: a fixed size draw ``k`` of image ``i`` is the same in every run of the split, whatever the run's batch size.
TTA_BATCH = 32


def tta_predictions(run: TrainedRun, items: list[dict], draws: int, workers: int = 0,
                    plain: np.ndarray | None = None) -> np.ndarray:
    """Mean sigmoid probabilities (n, findings) over ``draws`` passes with the regime's random part.

    The random part runs where the run trained it: batched on the run's device (``augment_on`` auto or device,
    when the regime compiles to :class:`~mai_aug.transforms.batched.BatchedStage`), else per image in the data
    loader. A regime without a random part has nothing to draw: its plain predictions (``plain``, or computed) are
    returned.
    """
    if not run.regime.random:
        logger.warning(f"regime {run.regime.name!r} has no random part: its TTA predictions are the plain ones")
        return plain if plain is not None else run.predict(items, workers=workers)
    stage = _batched_stage(run)
    base = run.dataset(items, online=False)  # the run's image store: read a row at a time, not copied
    indexed, transform = IndexedDataset(base), run.regime.online_transform(True)
    total = np.zeros((len(items), len(run.names)))
    for draw in range(draws):
        if stage is None:
            total += run.predict_dataset(SeededDataset(base, transform, draw), workers=workers)
        else:
            total += run.predict_dataset(indexed, TTA_BATCH, workers, shift=_draw_of(stage, draw))
    return total / draws


def _batched_stage(run: TrainedRun) -> BatchedStage | None:
    """The run's regime as a batched stage where the run trained on the device path, else None (said why)."""
    if run.config.augment_on == "loader":
        return None
    stage = compile_regime(run.regime)
    if isinstance(stage, str):
        logger.info(f"TTA: per-image loader path; regime {run.regime.name!r} cannot run batched ({stage})")
        return None
    return stage


def _draw_of(stage: BatchedStage, draw: int) -> BatchShiftFn:
    """The stage as a batch shift for TTA draw ``draw``: uint8 store images -> the augmented network input.

    Seeded as ``stage_seed(draw, 0, first index)``: epoch 0, which training (epochs from 1) never draws.
    """
    seeded = dataclasses.replace(stage, seed=draw)
    return lambda images, indices: seeded(images, 0, int(indices[0]))


def tta_table(labels: np.ndarray, patients: np.ndarray, plain: np.ndarray, averaged: np.ndarray,
              names: Sequence[str], draws: int, n_boot: int) -> pd.DataFrame:
    """Per finding (macro first): AUC of the plain and of the TTA predictions, and their paired difference.

    Scored as ``compare`` scores regimes (``reports.compare.summary_table`` with ``plain`` as the baseline): the
    same patient resamples for both, simultaneous intervals for the differences over every scored finding.
    """
    scores = score_regimes(labels, patients, {"plain": [plain], f"tta{draws}": [averaged]}, n_boot=n_boot, seed=0)
    table = summary_table(scores, list(names), baseline="plain")
    return table.drop(columns=["seeds", "auc_sd_over_seeds"]).rename(columns={"regime": "prediction"})
