"""Devices, logging to the run folder, and finding checkpoints."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from mai_aug.errors import MaiAugError, ShortUserErrors

LOGGER = "mai_aug"


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MaiAugError(f"--device {name}: no CUDA GPU is available here (use --device auto or cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MaiAugError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


class RunLog:
    """Send the ``mai_aug`` logger to ``RUN/train.log`` and stderr while a command runs."""

    def __init__(self, path: Path, echo: bool = True, enabled: bool = True) -> None:
        self.path, self.echo, self.enabled = Path(path), echo, enabled
        self.handlers: list[logging.Handler] = []

    def __enter__(self) -> logging.Logger:
        logger = logging.getLogger(LOGGER)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        if not self.enabled:  # a non-zero torchrun rank: errors only, on stderr
            logger.setLevel(logging.ERROR)
            self.handlers.append(logging.StreamHandler(sys.stderr))
            self.handlers[-1].setFormatter(fmt)
            self.handlers[-1].addFilter(ShortUserErrors())
            logger.addHandler(self.handlers[-1])
            return logger
        self.handlers.append(logging.FileHandler(self.path))
        if self.echo:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        for h in self.handlers:
            h.setFormatter(fmt)
            h.addFilter(ShortUserErrors())  # MONAI's StatsHandler logs every exception with its traceback
            logger.addHandler(h)
        return logger

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger(LOGGER)
        for h in self.handlers:
            logger.removeHandler(h)
            h.close()


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest end-of-epoch checkpoint (``last_checkpoint_epoch=N.pt``), or None."""
    found = sorted(Path(checkpoint_dir).glob("last*epoch=*.pt"), key=lambda p: int(p.stem.rsplit("=", 1)[1]))
    return found[-1] if found else None


def checkpoint_epoch(path: Path) -> int:
    return int(Path(path).stem.rsplit("=", 1)[1])


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint file, turning truncation or corruption into one clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MaiAugError(f"checkpoint {path}: file not found") from None
    except Exception as e:
        raise MaiAugError(f"checkpoint {path}: cannot be read, truncated or not a checkpoint ({type(e).__name__}: {e})") from None


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
