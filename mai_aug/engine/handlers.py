"""Small ignite handlers for what MONAI's handlers do not cover: the metrics table, NaN stop, LR and images."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from mai_aug.engine.metrics import MACRO_KEY, finding_key

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
        self.total, self.count = 0.0, 0

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
    """Append one row per validation to ``metrics.csv``: epoch, train loss, learning rate, macro and per-finding AUC."""

    def __init__(self, path: Path, names: Sequence[str], trainer: Engine, losses: LossTracker,
                 optimizer: torch.optim.Optimizer) -> None:
        self.path, self.names, self.trainer, self.losses, self.optimizer = Path(path), list(names), trainer, losses, optimizer
        self.columns = ["epoch", "train_loss", "lr", "auc_macro", *self.names]

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.COMPLETED, self.write)

    def truncate(self, last_epoch: int) -> None:
        """Keep only rows up to ``last_epoch`` (a resumed run rewrites what came after its checkpoint)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= last_epoch]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, evaluator: Engine) -> None:
        m = evaluator.state.metrics
        row = {"epoch": self.trainer.state.epoch, "train_loss": f"{self.losses.mean:.6f}",
               "lr": f"{self.optimizer.param_groups[0]['lr']:.6g}", "auc_macro": f"{m[MACRO_KEY]:.10g}"}
        row.update({n: f"{m[finding_key(n)]:.10g}" for n in self.names})
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)


class LearningRateWriter:
    """``train/lr`` to TensorBoard at the end of each epoch."""

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
