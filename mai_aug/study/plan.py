"""``mai-aug plan``: the seeds and test patients an existing study would need to detect a difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mai_aug.analyses.outputs import load_predictions
from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.errors import MaiAugError
from mai_aug.core.layout import StudyLayout
from mai_aug.data.split import load_datalist
from mai_aug.stats.paired import baseline_regime, score_regimes
from mai_aug.stats.planning import DEFAULT_POWER, plan_table


def read_study_config(out: Path) -> dict:
    """A finished comparison's ``compare_config.yaml`` (regimes, seeds, bootstrap, primary)."""
    path = StudyLayout(out).config
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MaiAugError(f"`study` {out}: no finished comparison there ({path}: {e.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise MaiAugError(f"{path}: not a comparison's configuration ({type(e).__name__})") from None
    if not isinstance(config, dict) or not isinstance(config.get("regimes"), list) or \
            not isinstance(config.get("seeds"), int):
        raise MaiAugError(f"{path}: not a comparison's configuration (no regimes and seeds)")
    return config


def study_seeds(config: dict) -> list[int]:
    """The seeds a comparison's report covered: its ``seed_list``, or 0 to ``seeds`` - 1 (reports before it)."""
    listed = config.get("seed_list")
    if isinstance(listed, list) and listed and all(isinstance(k, int) for k in listed):
        return listed
    return list(range(config["seeds"]))


def plan_study(out: Path, detect: float, power: float = DEFAULT_POWER) -> pd.DataFrame:
    """The planning table of the study in ``out`` for a true difference ``detect`` (nothing is trained)."""
    config = read_study_config(Path(out))
    regimes, seeds = [str(r) for r in config["regimes"]], study_seeds(config)
    if len(regimes) < 2:
        raise MaiAugError(f"`study` {out}: one regime, nothing to compare")
    names = list(load_datalist(StudyLayout(out).datalist)["labels"])
    labels, patients, predictions = load_predictions(Path(out), regimes, seeds, names)
    scores = score_regimes(labels, patients, predictions, n_boot=int(config.get("bootstrap", DEFAULT_BOOTSTRAP)), seed=0)
    return plan_table(scores, names, baseline_regime(regimes), len(np.unique(patients)), detect, power,
                      primary=str(config.get("primary", "macro")))
