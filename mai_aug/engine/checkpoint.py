"""Checkpoints that are never partial: atomic files, checkpoint names, and the saver handler of a training run.

MONAI's ``CheckpointSaver`` forces ignite's ``DiskSaver(atomic=False)`` (so a kill mid-write leaves a truncated
file under the final name), and ignite's ``Checkpoint`` deletes the previous file *before* writing the next one
(so that kill also leaves nothing to resume from). Neither fsyncs. ``CheckpointWriter`` below writes to a
temporary file in the same folder, fsyncs, renames, and only then removes the older checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from mai_aug.engine.layout import BEST_NAME as BEST_NAME
from mai_aug.engine.layout import LAST_PREFIX as LAST_PREFIX
from mai_aug.errors import MaiAugError
from mai_aug.utils import atomic_write  # save_atomic looks it up here, where tests replace it

logger = logging.getLogger("mai_aug")

_LAST_RE = re.compile(r"^last_checkpoint_epoch=(\d+)(?:_iteration=(\d+))?\.pt$")


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files left by a process killed mid-write (they never carry a final name)."""
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def checkpoint_name(epoch: int, iteration: int | None = None) -> str:
    """``last_checkpoint_epoch=N.pt`` after epoch N; ``last_checkpoint_epoch=N_iteration=I.pt`` inside epoch N."""
    return f"{LAST_PREFIX}{epoch}.pt" if iteration is None else f"{LAST_PREFIX}{epoch}_iteration={iteration}.pt"


def _order(path: Path) -> tuple[int, float]:
    """Sort key: a checkpoint inside epoch N comes after epoch N-1's and before epoch N's end."""
    match = _LAST_RE.match(path.name)
    epoch, iteration = int(match[1]), match[2]
    return (epoch, math.inf if iteration is None else int(iteration))


def last_checkpoints(folder: Path) -> list[Path]:
    """The run's ``last_checkpoint_epoch=*.pt`` files, oldest first."""
    found = [p for p in Path(folder).glob(f"{LAST_PREFIX}*.pt") if _LAST_RE.match(p.name)]
    return sorted(found, key=_order)


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint of a run (end of epoch or inside one), or None."""
    found = last_checkpoints(folder)
    return found[-1] if found else None


def remove_older_checkpoints(folder: Path, newest: Path) -> None:
    """Delete every last checkpoint in ``folder`` but ``newest`` (a kill between a save and this leaves two)."""
    for old in last_checkpoints(folder):
        if old != newest:
            old.unlink(missing_ok=True)


def checkpoint_epoch(path: Path) -> int:
    """The number of epochs completed when ``path`` was written."""
    epoch, position = _order(Path(path))
    return epoch if position == math.inf else epoch - 1


class CheckpointWriter:
    """Atomic ``best.pt`` and ``last_checkpoint_epoch=N.pt`` for a trainer/evaluator pair; keeps only the newest.

    The last checkpoint is written after validation at each epoch end, and with ``every > 0`` also every
    ``every`` iterations inside an epoch. It holds the model, the optimizer, the trainer's position, the
    running epoch loss and the best validation score, so a resumed run continues exactly where this one was.
    A failed write stops the trainer and is kept in ``error``; the previous checkpoint stays intact.

    Args:
        folder: the run's ``checkpoints/`` folder.
        net: the (unwrapped) network.
        optimizer: its optimizer.
        trainer: the training engine.
        evaluator: the validation engine (its ``best_metric`` picks ``best.pt``).
        stateful: further objects with ``state_dict``/``load_state_dict`` to carry (loss tracker, early stop).
        every: iterations between checkpoints inside an epoch (0: at epoch ends only).
    """

    def __init__(self, folder: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer: Engine,
                 evaluator: Engine, stateful: Mapping[str, Any] | None = None, every: int = 0) -> None:
        self.folder, self.net, self.optimizer = Path(folder), net, optimizer
        self.trainer, self.evaluator = trainer, evaluator
        self.stateful, self.every = dict(stateful or {}), every
        self.error: MaiAugError | None = None

    def attach(self) -> None:
        """Attach after the validation handler, so an epoch's checkpoint follows its metrics (rank 0 only)."""
        self.evaluator.add_event_handler(Events.COMPLETED, self.save_best)
        self.trainer.add_event_handler(Events.EPOCH_COMPLETED, self.save_last)
        if self.every > 0:
            self.trainer.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.save_inside_epoch)

    def state_dict(self) -> dict[str, Any]:
        trainer, evaluator = self.trainer.state, self.evaluator.state
        return {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "trainer": {"iteration": trainer.iteration, "epoch_length": trainer.epoch_length,
                        "max_epochs": trainer.max_epochs},
            "best": {"metric": float(evaluator.best_metric), "epoch": int(evaluator.best_metric_epoch)},
            **{name: obj.state_dict() for name, obj in self.stateful.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint into the network, optimizer, trainer, evaluator and ``stateful`` objects."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.trainer.load_state_dict({"iteration": int(state["trainer"]["iteration"]),
                                      "epoch_length": self.trainer.state.epoch_length,
                                      "max_epochs": self.trainer.state.max_epochs})
        best = state.get("best")
        if best:
            self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = best["metric"], best["epoch"]
        for name, obj in self.stateful.items():
            if name in state:
                obj.load_state_dict(state[name])

    def save_best(self, evaluator: Engine) -> None:
        """``best.pt`` when this validation set a new best (MONAI's evaluator tracks it)."""
        if self.error is None and evaluator.state.best_metric_epoch == self.trainer.state.epoch:
            self._save({"model": self.net.state_dict(), "metric": float(evaluator.state.best_metric),
                        "epoch": int(evaluator.state.best_metric_epoch)}, self.folder / BEST_NAME, self._resume_note())

    def save_last(self, trainer: Engine) -> None:
        self._save_last(checkpoint_name(trainer.state.epoch))

    def save_inside_epoch(self, trainer: Engine) -> None:
        # Skipped at an epoch's end (saved after validation) and after a non-finite loss stopped the trainer.
        if trainer.state.iteration % trainer.state.epoch_length and not trainer.should_terminate:
            self._save_last(checkpoint_name(trainer.state.epoch, trainer.state.iteration))

    def _save_last(self, name: str) -> None:
        if self.error is not None:
            return  # a failed write stopped the run; the previous checkpoint stays the newest
        path = self.folder / name
        if self._save(self.state_dict(), path, self._resume_note()):
            remove_older_checkpoints(self.folder, path)

    def _resume_note(self) -> str:
        previous = last_checkpoint(self.folder)
        return f"; --resume continues from {previous.name}" if previous else "; no checkpoint was written yet"

    def _save(self, obj: Any, path: Path, note: str) -> bool:
        try:
            save_atomic(obj, path)
        except MaiAugError as e:
            self.error = MaiAugError(f"{e}{note}")
            logger.error(str(self.error), exc_info=self.error)  # ShortUserErrors: once in train.log, not twice on screen
            self.trainer.terminate()
            return False
        return True
