"""Small ignite handlers for what MONAI's handlers do not cover: the metrics table, NaN stop, LR and images."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from mai_aug.core.files import write_text_atomic
from mai_aug.engine.metrics import MACRO_KEY, finding_key, macro_key

logger = logging.getLogger("mai_aug")


class LossTracker:
    """Mean training loss of the current epoch; stops the run on a non-finite loss.

    A NaN or infinite loss terminates the trainer inside the epoch, before the epoch's checkpoint is written,
    so the last good checkpoint stays as it was; ``nan_at`` says where it happened.
    """

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0
        self.nan_at: tuple[int, int] | None = None
        self.distributed = False

    def attach(self, engine: Engine, distributed: bool = False) -> None:
        self.distributed = distributed
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def reset(self, engine: Engine) -> None:
        if engine.state.iteration % engine.state.epoch_length:
            return  # resumed inside an epoch: the restored sum covers the iterations already done
        self.total, self.count = 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])

    def update(self, engine: Engine) -> None:
        loss_t = engine.state.output["loss"].detach().float()
        if self.distributed:  # every rank sees the mean loss, so all stop on the same iteration
            loss_t = loss_t.clone()
            torch.distributed.all_reduce(loss_t)
            loss_t /= torch.distributed.get_world_size()
        loss = loss_t.item()
        if not math.isfinite(loss):
            self.nan_at = (engine.state.epoch, engine.state.iteration)
            logger.error(f"loss is {loss} at epoch {engine.state.epoch}, iteration {engine.state.iteration}: stopping")
            engine.terminate()
            return
        self.total += loss
        self.count += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


class MetricsTable:
    """One row per validation in ``metrics.csv``: epoch, train loss, learning rate, macro and per-finding AUC, then
    for each extra metric key (``--metrics``) ``<key>_macro`` and ``<key>_<finding>``.

    The file is rewritten whole and atomically each time (it is small), so a kill never leaves a torn row.
    """

    def __init__(self, path: Path, names: Sequence[str], trainer: Engine, losses: LossTracker,
                 optimizer: torch.optim.Optimizer, metric_keys: Sequence[str] = ()) -> None:
        self.path, self.names, self.trainer, self.losses, self.optimizer = Path(path), list(names), trainer, losses, optimizer
        self.metric_keys = list(metric_keys)
        self.columns = ["epoch", "train_loss", "lr", "auc_macro", *self.names,
                        *[c for k in self.metric_keys for c in (f"{k}_macro", *[f"{k}_{n}" for n in self.names])]]

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.COMPLETED, self.write)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate(self, last_epoch: int) -> None:
        """Keep only rows up to ``last_epoch`` (a resumed run rewrites what came after its checkpoint)."""
        if self.path.is_file():
            self._rewrite([r for r in self.rows() if int(r["epoch"]) <= last_epoch])

    def write(self, evaluator: Engine) -> None:
        m = evaluator.state.metrics
        row = {"epoch": self.trainer.state.epoch, "train_loss": f"{self.losses.mean:.6f}",
               "lr": f"{self.optimizer.param_groups[0]['lr']:.6g}", "auc_macro": f"{m[MACRO_KEY]:.10g}"}
        row.update({n: f"{m[finding_key(n)]:.10g}" for n in self.names})
        for k in self.metric_keys:
            row[f"{k}_macro"] = f"{m[macro_key(k)]:.10g}"
            row.update({f"{k}_{n}": f"{m[finding_key(n, f'val/{k}')]:.10g}" for n in self.names})
        self._rewrite([*self.rows(), row])

    def _rewrite(self, rows: list[dict]) -> None:
        # a run resumed with fewer --metrics keeps the earlier rows' columns (blank in later rows), never drops them
        kept = [c for r in rows for c in r if c not in self.columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, [*self.columns, *dict.fromkeys(kept)])
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, text.getvalue())


class CosineSchedule:
    """Cosine learning rate set at each epoch start: ``lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2``.

    A pure function of the epoch and the run's length, so a resumed run uses the rates of an uninterrupted one
    and a run resumed with more ``--epochs`` stretches its schedule. Hand-written because torch's
    ``CosineAnnealingLR`` restored from a checkpoint keeps its old ``T_max`` (2 epochs resumed to 5 ran
    1e-3, 5e-4, 0, 5e-4, 1e-3) and steps after the epoch, so the rate read at its end was the next epoch's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, epochs: int) -> None:
        self.optimizer, self.lr, self.epochs = optimizer, lr, epochs

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def rate(self, epoch: int) -> float:
        """The rate used during ``epoch`` (1-based)."""
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))

    def __call__(self, engine: Engine) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate(engine.state.epoch)


class LearningRateWriter:
    """``train/lr`` to TensorBoard at the end of each epoch: the rate used during that epoch."""

    def __init__(self, writer: SummaryWriter, optimizer: torch.optim.Optimizer) -> None:
        self.writer, self.optimizer = writer, optimizer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], engine.state.epoch)


class FirstBatchImages:
    """The first training batch as the network saw it (augmented), as stored: patient's left on the image right.

    MONAI's TensorBoardImageHandler draws one image of a batch; this writes a grid of up to ``n``.
    """

    def __init__(self, writer: SummaryWriter, n: int = 16, tag: str = "train/augmented_batch") -> None:
        self.writer, self.n, self.tag = writer, n, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), self)

    def __call__(self, engine: Engine) -> None:
        images = engine.state.output["image"][: self.n, :1].detach().float().cpu()  # (N, 1, H, W), rows = image rows
        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        hi = images.amax(dim=(1, 2, 3), keepdim=True)
        self.writer.add_images(self.tag, (images - lo) / (hi - lo).clamp_min(1e-8), engine.state.epoch, dataformats="NCHW")
