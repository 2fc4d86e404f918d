"""The interface every study analysis has: is its output current for a run, run it, and its part of report.md.

``mai-aug compare`` loops over the enabled analyses (:meth:`StudyAnalysis.update`, then :meth:`StudyAnalysis.section`), so a
new analysis is one folder under ``mai_aug/analyses/`` with a class of this shape, and one line where compare
builds the enabled ones (``study/analyses.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mai_aug.core.layout import StudyLayout
from mai_aug.reports.findings import Evidence
from mai_aug.stats.paired import baseline_regime


@dataclass(frozen=True)
class StudyRuns:
    """The finished runs of a study, as an analysis reads them: ``OUT/<regime>/seed-<k>`` for every pair."""

    out: Path
    regimes: list[str]
    seeds: tuple[int, ...]  # the seeds every regime has a finished run of
    names: list[str]  # the findings, in the datalist's order
    n_boot: int
    device: str = "auto"

    @property
    def baseline(self) -> str:
        return baseline_regime(self.regimes)

    def run_dirs(self) -> Iterator[tuple[str, int, Path]]:
        """(regime, seed, run folder) in the study's order."""
        for regime in self.regimes:
            for seed in self.seeds:
                yield regime, seed, StudyLayout(self.out).run_dir(regime, seed)


@dataclass
class Section:
    """An analysis's part of report.md: its lines, its differences for "What this study shows", and what
    ``compare_config.yaml`` records of its settings."""

    lines: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


class StudyAnalysis:
    """One analysis of every run of a study. Subclasses set ``name`` and implement the three steps."""

    name: ClassVar[str]
    #: Whether :meth:`run` is a step of each run (a study's job does it right after the run's evaluation); False
    #: where the analysis's runs are jobs of their own (the learning curve's trainings).
    per_run: ClassVar[bool] = True

    def is_current(self, run_dir: Path, study: StudyRuns) -> bool:
        """Whether the run's output of this analysis was made from its checkpoint as it is now, with these settings."""
        raise NotImplementedError

    def run(self, run_dir: Path, study: StudyRuns) -> None:
        """Write this analysis's output into the run folder."""
        raise NotImplementedError

    def section(self, study: StudyRuns) -> Section:
        """Read every run's output together and write the study's tables, figures and report section."""
        raise NotImplementedError

    def update(self, study: StudyRuns) -> None:
        """Run this analysis on every run of the study whose output is not current, saying which on stderr."""
        for regime, seed, run_dir in study.run_dirs():
            if not self.is_current(run_dir, study):
                print(f"{self.name} of {regime} seed {seed}", file=sys.stderr, flush=True)
                self.run(run_dir, study)
