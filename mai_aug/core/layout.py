"""Where things live on disk: one object for a run folder's layout, one for a study folder's.

Every file and folder name of a run (``mai-aug train``/``evaluate``) and of a study (``mai-aug compare``) is
written here once; the commands ask these objects for paths instead of spelling names. The layout is what users
see and scripts read, so changing a name here changes the on-disk format.

Run folder::

    RUN/config.yaml  fingerprint.json  datalist.json  metrics.csv  train.log  DONE  .lock  bad_images.csv
        checkpoints/best.pt  checkpoints/last_checkpoint_epoch=N.pt
        eval/<split>_auc.csv  <split>_<metric>.csv  <split>_roc.png  <split>_predictions.csv  <split>_meta.json
        eval/evaluate.log   tensorboard/
        external/<name>/auc.csv  roc.png  predictions.csv  meta.json   (evaluate --external)

Cache root (``--cache-dir``, else ``$MAI_AUG_CACHE``, else ``~/.cache/mai_aug``), shared by every run and study::

    CACHE/images/<size>px-<load>-<content>/images.npy  index.json   (image stores: mai_aug/data/store.py)
    CACHE/phantom/n<N>-<size>px-<key>/                                (compare's generated phantoms)

Study folder::

    OUT/.mai-aug-compare (written first: marks a comparison folder)
        datalist.json  report.md  summary.csv  summary.md  summary_<metric>.csv  plan.csv  auc_by_regime.csv/.png
        roc_<regime>.png  reliability_<regime>.png  compare_config.yaml  bad_images.csv
        tables/NN-<name>.csv/.tex (``--export-tables``)
        <regime>/seed-<k>/   (a run folder)   tensorboard/<regime>-seed<k>/   replaced/<time>/
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import temporary_files
from mai_aug.core.names import check_name

#: A run's lock file (core/locks.py).
LOCK_NAME = ".lock"

#: The best checkpoint's file name in ``checkpoints/``.
BEST_NAME = "best.pt"
#: The stem of the resumable checkpoints, ``last_checkpoint_epoch=N.pt``.
LAST_PREFIX = "last_checkpoint_epoch="
FINGERPRINT_FILE = "fingerprint.json"
CONFIG_FILE = "config.yaml"
DATALIST_FILE = "datalist.json"
SEED_PREFIX = "seed-"
STUDY_MARKER = ".mai-aug-compare"


@dataclass(frozen=True)
class _Folder:
    """A folder whose layout a subclass spells out; ``root`` may be given as a string."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @staticmethod
    def part(name: str, what: str) -> str:
        """``name`` as one path component of this folder: a safe name (:mod:`mai_aug.core.names`), never ``..`` or a
        path, so that nothing built from user data leaves the folder."""
        return check_name(name, what)


class RunLayout(_Folder):
    """The files and folders of one run folder ``root``."""

    @property
    def config(self) -> Path:
        """``config.yaml``: the run's settings and what was resolved from them."""
        return self.root / CONFIG_FILE

    @property
    def fingerprint(self) -> Path:
        return self.root / FINGERPRINT_FILE

    @property
    def datalist(self) -> Path:
        return self.root / DATALIST_FILE

    @property
    def metrics(self) -> Path:
        """``metrics.csv``: one row per validation."""
        return self.root / "metrics.csv"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def job_failure(self) -> Path:
        """``job_failure.json``: why this run's last job in a study failed (removed when a job finishes it)."""
        return self.root / "job_failure.json"

    @property
    def done(self) -> Path:
        """``DONE``: written last by a finished training."""
        return self.root / "DONE"

    @property
    def bad_images(self) -> Path:
        return self.root / "bad_images.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST_NAME

    @property
    def last(self) -> Path | None:
        """The newest resumable checkpoint, or None."""
        return last_checkpoint(self.checkpoints)

    @property
    def tensorboard(self) -> Path:
        """The default TensorBoard folder (``--tensorboard-dir`` replaces it)."""
        return self.root / "tensorboard"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def eval_log(self) -> Path:
        return self.eval_dir / "evaluate.log"

    def eval_file(self, split: str, what: str) -> Path:
        """``eval/<split>_<what>``, e.g. ``eval_file("test", "auc.csv")``."""
        return self.eval_dir / f"{split}_{what}"

    def auc(self, split: str) -> Path:
        return self.eval_file(split, "auc.csv")

    def metric(self, split: str, key: str) -> Path:
        """``eval/<split>_<key>.csv``: the table of one metric beside AUC."""
        return self.eval_file(split, f"{key}.csv")

    def roc(self, split: str) -> Path:
        return self.eval_file(split, "roc.png")

    def predictions(self, split: str) -> Path:
        return self.eval_file(split, "predictions.csv")

    def meta(self, split: str) -> Path:
        """``eval/<split>_meta.json``: which checkpoint the split's outputs came from (written last)."""
        return self.eval_file(split, "meta.json")

    def tta(self, split: str) -> Path:
        """``eval/<split>_tta.csv``: AUC with and without test-time augmentation."""
        return self.eval_file(split, "tta.csv")

    def tta_predictions(self, split: str) -> Path:
        return self.eval_file(split, "tta_predictions.csv")

    def calibration_ece(self, split: str) -> Path:
        """``eval/<split>_calibration.csv``: each finding's ECE without and with the run's calibration."""
        return self.eval_file(split, "calibration.csv")

    @property
    def calibration(self) -> Path:
        """``calibration.json``: ``mai-aug calibrate``'s per-finding maps and the checkpoint they were fitted for."""
        return self.root / "calibration.json"

    @property
    def robustness_dir(self) -> Path:
        """``robustness/``: ``mai-aug robustness`` (table.csv, predictions.npz, <shift>.png, meta.json last)."""
        return self.root / "robustness"

    @property
    def robustness_predictions(self) -> Path:
        """``robustness/predictions.npz``: the sweep's probabilities, one array per (shift, level)."""
        return self.robustness_dir / "predictions.npz"

    @property
    def saliency_dir(self) -> Path:
        """``saliency/``: ``mai-aug saliency`` (pointing.csv, hit_rate.csv, grid.png, summary.md, meta.json last)."""
        return self.root / "saliency"

    def external_dir(self, name: str) -> Path:
        """``external/<name>/``: ``mai-aug evaluate --external`` on another dataset (auc.csv, roc.png,
        predictions.csv, meta.json last)."""
        return self.root / "external" / self.part(name, "`external_name`")

    def external_file(self, name: str, what: str) -> Path:
        """``external/<name>/<what>`` (``auc.csv``, ``roc.png``, ``predictions.csv``, ``meta.json``)."""
        return self.external_dir(name) / what


class StudyLayout(_Folder):
    """The files and folders of one study folder ``root`` (``mai-aug compare --out``)."""

    @property
    def datalist(self) -> Path:
        """The study's one split, shared by every run."""
        return self.root / DATALIST_FILE

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def summary(self) -> Path:
        return self.root / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    @property
    def plan(self) -> Path:
        """The planning table: seeds and test patients to detect a difference (``--detect``)."""
        return self.root / "plan.csv"

    def metric_summary(self, key: str) -> Path:
        return self.root / f"summary_{key}.csv"

    @property
    def auc_by_regime(self) -> Path:
        """``auc_by_regime.csv``; its figure is ``.with_suffix(".png")``."""
        return self.root / "auc_by_regime.csv"

    def roc(self, regime: str) -> Path:
        return self.root / f"roc_{self.part(regime, 'regime')}.png"

    def reliability(self, regime: str) -> Path:
        return self.root / f"reliability_{self.part(regime, 'regime')}.png"

    @property
    def config(self) -> Path:
        return self.root / "compare_config.yaml"

    @property
    def report_lock(self) -> Path:
        """``.report.lock``: processes sharing the study write its report one at a time."""
        return self.root / ".report.lock"

    @property
    def slurm(self) -> Path:
        """``slurm/``: the logs and pickled jobs of ``compare --executor slurm``."""
        return self.root / "slurm"

    @property
    def marker(self) -> Path:
        """``.mai-aug-compare``: written into ``--out`` before anything else, it marks a comparison folder."""
        return self.root / STUDY_MARKER

    def is_study(self) -> bool:
        """Whether ``root`` is a comparison folder: its marker, ``compare_config.yaml`` or a run folder of older code.

        A marker still being written (another compare claiming the folder now) counts: two compares started together
        on a new ``out`` would otherwise see each other's temporary marker and refuse the folder.
        """
        if self.marker.is_file() or self.config.is_file() or temporary_files(self.marker):
            return True
        return any((RunLayout(path).fingerprint.is_file() or RunLayout(path).config.is_file())
                   for _, _, path in self.run_dirs())

    @property
    def bad_images(self) -> Path:
        return self.root / "bad_images.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def replaced(self) -> Path:
        """Where ``--retrain`` moves stale runs (one time-stamped folder per move)."""
        return self.root / "replaced"

    @property
    def tables(self) -> Path:
        """``tables/``: report.md's tables as CSV and LaTeX (``compare --export-tables``)."""
        return self.root / "tables"

    @property
    def tta(self) -> Path:
        """``tta.csv``: each regime's macro AUC with and without test-time augmentation (``compare --tta``)."""
        return self.root / "tta.csv"

    @staticmethod
    def label(regime: str, seed: int | str) -> str:
        """``<regime>/seed-<k>``: a run's folder relative to the study folder."""
        return f"{StudyLayout.part(regime, 'regime')}/{SEED_PREFIX}{_seed_part(seed)}"

    def run_dir(self, regime: str, seed: int | str) -> Path:
        return self.root / self.part(regime, "regime") / f"{SEED_PREFIX}{_seed_part(seed)}"

    def run(self, regime: str, seed: int | str) -> RunLayout:
        return RunLayout(self.run_dir(regime, seed))

    def run_tensorboard(self, regime: str, seed: int | str, root: Path | None = None) -> Path:
        """``tensorboard/<regime>-seed<k>`` (under ``root`` in place of the study's TensorBoard folder)."""
        return (self.tensorboard if root is None else root) / f"{self.part(regime, 'regime')}-seed{_seed_part(seed)}"

    def run_dirs(self) -> Iterator[tuple[str, int, Path]]:
        """(regime, seed, folder) of every ``<regime>/seed-<k>`` folder present, sorted."""
        for path in sorted(self.root.glob(f"*/{SEED_PREFIX}*")):
            seed = path.name.removeprefix(SEED_PREFIX)
            if seed.isdigit():
                yield path.parent.name, int(seed), path

    @staticmethod
    def seed_of(run_dir: Path) -> str:
        """``k`` of a ``.../seed-<k>`` folder."""
        return Path(run_dir).name.removeprefix(SEED_PREFIX)


def _seed_part(seed: int | str) -> str:
    """A seed as a path part: digits only (``seed-01`` of an older folder stays as spelled)."""
    text = str(seed)
    if not text.isdigit():
        raise MaiAugError(f"seed {seed!r}: not a seed number (digits only)")
    return text


_LAST_RE = re.compile(r"^last_checkpoint_epoch=(\d+)(?:_iteration=(\d+))?\.pt$")


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


def checkpoint_epoch(path: Path) -> int:
    """The number of epochs completed when ``path`` was written."""
    epoch, position = _order(Path(path))
    return epoch if position == math.inf else epoch - 1


def cache_root() -> Path:
    """The cache root without ``--cache-dir``: ``$MAI_AUG_CACHE``, else ``~/.cache/mai_aug``."""
    return Path(os.environ.get("MAI_AUG_CACHE", Path.home() / ".cache" / "mai_aug"))
