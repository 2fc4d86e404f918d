"""The robustness sweep as a study analysis: every run's sweep (unless current), then the paired statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mai_aug.analyses.base import Section, StudyAnalysis, StudyRuns
from mai_aug.analyses.robustness.run import robustness_run, swept_with
from mai_aug.analyses.robustness.section import load_sweeps, sweep_statistics, write_sweep_report
from mai_aug.core.layout import RunLayout
from mai_aug.reports.findings import strongest_losses, strongest_shifts
from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels


@dataclass
class RobustnessAnalysis(StudyAnalysis):
    """``compare --robustness [SHIFT ...] [--robustness-levels ...] [--site-data DIR]``."""

    name: ClassVar[str] = "robustness sweep"
    shifts: list[str] = field(default_factory=list)  # empty: every shift type
    level_entries: list[str] = field(default_factory=list)  # ``--robustness-levels`` as given
    site_data: Path | None = None

    @property
    def chosen_shifts(self) -> list[str]:
        return self.shifts or list(SHIFT_TYPES)

    @property
    def levels(self) -> dict[str, list[float]]:
        return parse_levels(self.level_entries, self.chosen_shifts)

    def is_current(self, run_dir: Path, study: StudyRuns) -> bool:
        return swept_with(run_dir, RunLayout(run_dir).best, self.levels, study.n_boot, self.site_data)

    def run(self, run_dir: Path, study: StudyRuns) -> None:
        robustness_run(run_dir, self.chosen_shifts, self.level_entries, "test", "best", study.device,
                       n_boot=study.n_boot, site_data=self.site_data)

    def section(self, study: StudyRuns) -> Section:
        """``robustness.csv``, ``robustness_area.csv``, ``robustness_<shift>.png``, report.md's section, and the
        differences at each shift's strongest level (for "What this study shows")."""
        labels, patients, sweeps = load_sweeps(study.out, study.regimes, study.seeds, list(study.names))
        curve, area, loss = sweep_statistics(labels, patients, sweeps, list(study.names), study.n_boot,
                                             study.baseline)
        identity = {**{name: kind.identity for name, kind in SHIFT_TYPES.items()}, "site": 0.0}
        lines = write_sweep_report(study.out, curve, area, loss, study.baseline, len(study.seeds), study.n_boot)
        evidence = [*strongest_shifts(curve, study.baseline, identity),
                    *strongest_losses(loss, study.baseline, identity)]
        config = {"robustness": {"levels": self.levels,
                                 "site_data": str(self.site_data) if self.site_data is not None else None}}
        return Section(lines, evidence, config)
