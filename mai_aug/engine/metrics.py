"""Per-finding ROC AUC as an ignite metric.

MONAI's ``ROCAUC(average="none")`` handler records only the first class, and ``TensorBoardStatsHandler`` skips
non-scalar metrics, so this metric writes one scalar per finding (``val/auc/<Finding>``) plus the macro mean, and
the same for each extra metric chosen with ``--metrics`` (``val/<key>/<Finding>``, ``val/<key>_macro``; keys in
``mai_aug.stats.scores``). Extra metrics see sigmoid probabilities; AUC the logits (the same ranks). ``ece`` is
MONAI's ``CalibrationErrorMetric`` on the gathered set (findings as channels, images as one spatial axis); MONAI's
``CalibrationError`` handler does not fit: it needs (batch, channel, spatial) items and averages one error per item.
Finding names come from the datalist's ``labels``; a NaN label (unknown) leaves its image out of that finding's scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced

from mai_aug.core.errors import MaiAugError
from mai_aug.engine.distributed import gather_rows
from mai_aug.stats.auc import macro_auc, per_finding_auc
from mai_aug.stats.scores import per_finding, resolve_metrics

MACRO_KEY = "val/auc_macro"


def finding_key(name: str, prefix: str = "val/auc") -> str:
    return f"{prefix}/{name}"


def macro_key(metric_key: str) -> str:
    """The macro scalar of a metric: ``val/auc_macro`` (``MACRO_KEY``), ``val/ap_macro``..."""
    return f"val/{metric_key}_macro"


class PerFindingAUC(Metric):
    """Collect logits and labels over an epoch; compute each finding's AUC over the whole (gathered) set.

    Args:
        names: finding names, in the network's output order.
        output_transform: maps the engine output to ``(logits, labels)``.
        prefix: scalar names are ``<prefix>/<finding>``.
        metrics: more metrics by name (``--metrics``): ``val/<key>/<finding>`` and ``val/<key>_macro`` each.
    """

    def __init__(self, names: Sequence[str], output_transform: Callable = lambda o: (o["pred"], o["label"]),
                 prefix: str = "val/auc", metrics: Sequence[str] = ()) -> None:
        self.names = list(names)
        self.extra = resolve_metrics(metrics)[1:]  # auc is this metric's own
        self.prefix = prefix
        self.macro_key = MACRO_KEY if prefix == "val/auc" else f"{prefix}_macro"
        self.last: dict[str, float] = {}
        super().__init__(output_transform=output_transform)

    @reinit__is_reduced
    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        scores, labels = output
        self._scores.append(scores.detach().float().cpu())
        self._labels.append(labels.detach().float().cpu())

    def gathered(self) -> tuple[np.ndarray, np.ndarray]:
        """All ranks' scores and labels (each rank holds a disjoint shard of the evaluation set)."""
        scores = torch.cat(self._scores) if self._scores else torch.zeros(0, len(self.names))
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, len(self.names))
        scores, labels = gather_rows(scores), gather_rows(labels)
        return scores.numpy(), labels.numpy()

    def compute(self) -> dict[str, float]:
        scores, labels = self.gathered()
        if not np.isfinite(scores).all():  # a diverged network: stop like a non-finite loss, before any checkpoint
            bad = int((~np.isfinite(scores)).any(axis=1).sum())
            raise MaiAugError(f"training diverged: {bad} of {len(scores)} validation predictions are not finite "
                              "(try a lower `lr`); the last good checkpoint is intact")
        self.last_scores = (scores, labels)
        aucs = per_finding_auc(labels, scores)
        macro = macro_auc(aucs, self.names)  # warns naming the findings without a defined AUC
        result = {finding_key(n, self.prefix): float(a) for n, a in zip(self.names, aucs)}
        result[self.macro_key] = macro
        if self.extra:
            probs = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
            for metric in self.extra:
                values = per_finding(metric, labels, probs)
                result.update({finding_key(n, f"val/{metric.key}"): float(v) for n, v in zip(self.names, values)})
                result[macro_key(metric.key)] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        self.last = result
        return result

    def completed(self, engine: Engine, name: str) -> None:
        """Put each finding's AUC and the macro mean into ``engine.state.metrics`` as scalars; ``name`` gets the macro."""
        result = self.compute()
        for key, value in result.items():
            engine.state.metrics[key] = value
        engine.state.metrics[name] = result[self.macro_key]
