"""Test-time augmentation as a study analysis: each run's test evaluation with TTA, then plain vs TTA AUC."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mai_aug.analyses.base import Section, StudyAnalysis, StudyRuns
from mai_aug.analyses.evaluate.run import evaluate_run
from mai_aug.analyses.trained_run import evaluated_with
from mai_aug.analyses.tta.section import tta_section
from mai_aug.core.layout import RunLayout


@dataclass
class TtaAnalysis(StudyAnalysis):
    """``compare --tta N``: the study's own test evaluation runs with N draws (so it is current after training)."""

    name: ClassVar[str] = "test-time augmentation"
    draws: int = 0

    def is_current(self, run_dir: Path, study: StudyRuns) -> bool:
        return evaluated_with(run_dir, "test", RunLayout(run_dir).best, self.draws)

    def run(self, run_dir: Path, study: StudyRuns) -> None:
        evaluate_run(run_dir, "test", "best", study.device, n_boot=study.n_boot, tta=self.draws)

    def section(self, study: StudyRuns) -> Section:
        lines = tta_section(study.out, study.regimes, study.seeds, study.names, study.n_boot, self.draws)
        return Section(lines, [], {"tta": self.draws})
