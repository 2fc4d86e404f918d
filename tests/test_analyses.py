"""The analyses interface: every analysis folder is wired into compare, and one "is current" check serves all."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest

import mai_aug.analyses as analyses_package
from mai_aug.analyses.base import StudyAnalysis, StudyRuns
from mai_aug.analyses.curves.study import TrainingSize
from mai_aug.analyses.external.data import ExternalSpec
from mai_aug.analyses.trained_run import checkpoint_identity, output_current
from mai_aug.study.analyses import enabled_analyses
from mai_aug.study.compare import CompareOptions


def analysis_classes() -> set[type]:
    """Every StudyAnalysis subclass defined in an ``analyses/<name>/analysis.py``."""
    found = set()
    for info in pkgutil.walk_packages(analyses_package.__path__, "mai_aug.analyses."):
        if info.name.endswith(".analysis"):
            module = importlib.import_module(info.name)
            found |= {c for _, c in inspect.getmembers(module, inspect.isclass)
                      if issubclass(c, StudyAnalysis) and c is not StudyAnalysis and c.__module__ == module.__name__}
    return found


def everything_on(tmp_path: Path) -> list[StudyAnalysis]:
    opts = CompareOptions(out=tmp_path, robustness=["rotation"], tta=2, saliency=True,
                          external=ExternalSpec(tmp_path / "other-site"))
    size = TrainingSize(fraction=0.5, folder=tmp_path / "fraction-0.5", datalist={"training": []}, train_opts={},
                        steps_per_epoch=1)
    return enabled_analyses(opts, [size])


def test_every_analysis_folder_is_built_by_compare(tmp_path):
    built = {type(a) for a in everything_on(tmp_path)}
    assert len(analysis_classes()) >= 4 and analysis_classes() == built


def test_nothing_is_current_in_an_empty_run(tmp_path):
    study = StudyRuns(tmp_path, ["none"], (0,), ["Cardiomegaly"], 200)
    run_dir = tmp_path / "none" / "seed-0"
    run_dir.mkdir(parents=True)
    for analysis in everything_on(tmp_path):
        assert not analysis.is_current(run_dir, study), analysis.name


def test_an_output_is_current_only_for_its_checkpoint_and_settings(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({**checkpoint_identity(checkpoint), "split": "test", "bootstrap": 200}))
    assert output_current(meta, checkpoint, split="test", bootstrap=200) is not None
    assert output_current(meta, checkpoint, split="test", bootstrap=1000) is None
    checkpoint.write_bytes(b"retrained")
    assert output_current(meta, checkpoint, split="test") is None
    meta.write_text("not json")
    assert output_current(meta, checkpoint) is None


@pytest.mark.parametrize("missing", ["checkpoint", "meta"])
def test_missing_files_are_not_current(tmp_path, missing):
    checkpoint, meta = tmp_path / "best.pt", tmp_path / "meta.json"
    checkpoint.write_bytes(b"w")
    meta.write_text(json.dumps(checkpoint_identity(checkpoint)))
    (checkpoint if missing == "checkpoint" else meta).unlink()
    assert output_current(meta, checkpoint) is None
