"""Learning curves as a study analysis: the runs of each training size, read against the full study's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mai_aug.analyses.base import Section, StudyAnalysis, StudyRuns
from mai_aug.analyses.curves.study import TrainingSize, curve_statistics, write_curve_report
from mai_aug.analyses.evaluate.run import evaluate_run
from mai_aug.analyses.trained_run import evaluated_with
from mai_aug.core.layout import RunLayout
from mai_aug.data.subsets import fraction_label
from mai_aug.reports.findings import smallest_size


@dataclass
class CurvesAnalysis(StudyAnalysis):
    """``compare --train-fraction F ...``. Its runs are trainings, planned and trained with the study's own on every
    rank (``study/compare.py`` ``plan_curves``/``curve_runs``); what is per run here is their test evaluation."""

    name: ClassVar[str] = "learning curve"
    per_run: ClassVar[bool] = False
    sizes: list[TrainingSize] = field(default_factory=list)

    def is_current(self, run_dir: Path, study: StudyRuns) -> bool:
        return evaluated_with(run_dir, "test", RunLayout(run_dir).best)

    def run(self, run_dir: Path, study: StudyRuns) -> None:
        evaluate_run(run_dir, "test", "best", study.device, n_boot=study.n_boot)

    def update(self, study: StudyRuns) -> None:
        """Evaluate every smaller size's run whose test evaluation is not current (fraction 1 is the study's)."""
        for size in self.sizes:
            if size.plan is not None:
                super().update(dataclasses.replace(study, out=size.folder))

    def section(self, study: StudyRuns) -> Section:
        curve = curve_statistics(self.sizes, study.regimes, study.seeds, study.names, study.n_boot, study.baseline)
        lines = write_curve_report(study.out, curve, self.sizes, study.baseline, len(study.seeds), study.n_boot)
        config = {"train_fractions": {fraction_label(s.fraction): s.record() for s in self.sizes}}
        return Section(lines, smallest_size(curve, study.baseline), config)
