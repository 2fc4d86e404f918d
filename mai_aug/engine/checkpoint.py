"""Checkpoints that are never partial: atomic files, checkpoint names, and the saver handler of a training run.

MONAI's ``CheckpointSaver`` forces ignite's ``DiskSaver(atomic=False)`` (so a kill mid-write leaves a truncated
file under the final name), and ignite's ``Checkpoint`` deletes the previous file *before* writing the next one
(so that kill also leaves nothing to resume from). Neither fsyncs. ``CheckpointWriter`` below writes to a
temporary file in the same folder, fsyncs, renames, and only then removes the older checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import (
    atomic_write,  # save_atomic looks it up here, where tests replace it
    )
from mai_aug.core.layout import BEST_NAME, checkpoint_name, last_checkpoint, last_checkpoints

logger = logging.getLogger("mai_aug")


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files left by a process killed mid-write (they never carry a final name)."""
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def remove_older_checkpoints(folder: Path, newest: Path) -> None:
    """Delete every last checkpoint in ``folder`` but ``newest`` (a kill between a save and this leaves two)."""
    for old in last_checkpoints(folder):
        if old != newest:
            old.unlink(missing_ok=True)


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
        return f"; `resume` continues from {previous.name}" if previous else "; no checkpoint was written yet"

    def _save(self, obj: Any, path: Path, note: str) -> bool:
        try:
            save_atomic(obj, path)
        except MaiAugError as e:
            self.error = MaiAugError(f"{e}{note}")
            logger.error(str(self.error), exc_info=self.error)  # ShortUserErrors: once in train.log, not twice on screen
            self.trainer.terminate()
            return False
        return True


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint file, turning truncation or corruption into one clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MaiAugError(f"checkpoint {path}: file not found") from None
    except Exception as e:
        first = re.split(r"(?<=\.)\s", str(e).strip(), maxsplit=1)[0]  # torch's first sentence, not its advice
        cause = f"{type(e).__name__}: {first}" if first else type(e).__name__  # EOFError() has no message
        refused = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        if refused:  # torch's page of advice ends in the actual reason (and suggests running the file's code)
            cause = f"refused by torch's weights-only loader: {refused[1]}"
        if Path(path).stat().st_size == 0:
            cause = "empty file (0 bytes)"
        raise MaiAugError(f"checkpoint {path}: cannot be read, truncated or not a checkpoint ({cause})") from None


def load_model_state(net: torch.nn.Module, state: dict, path: Path) -> None:
    """Load ``state['model']`` (or a bare state dict) into ``net``, naming a mismatch."""
    model_state = state.get("model", state) if isinstance(state, dict) else state
    if isinstance(model_state, dict) and "checkpointer" in model_state:
        # ignite saves a lone object's state dict unnested; the best checkpoint adds its saver's state beside it.
        model_state = {k: v for k, v in model_state.items() if k != "checkpointer"}
    try:
        net.load_state_dict(model_state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[:2]
        raise MaiAugError(f"checkpoint {path}: does not fit this model ({' '.join(first)[:300]})") from None
