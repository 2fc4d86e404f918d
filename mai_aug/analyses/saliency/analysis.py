"""The pointing game as a study analysis: every run's Grad-CAM pointing game (unless current), then hit rates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mai_aug.analyses.base import Section, StudyAnalysis, StudyRuns
from mai_aug.analyses.saliency.run import saliency_current, saliency_run
from mai_aug.analyses.saliency.study import saliency_section
from mai_aug.core.layout import RunLayout


@dataclass
class SaliencyAnalysis(StudyAnalysis):
    """``compare --saliency [--saliency-tolerance PX] [--saliency-max-images N]``."""

    name: ClassVar[str] = "saliency"
    tolerance: float | None = None  # pixels at the network input; None: the default fraction of the side
    max_images: int | None = None

    def is_current(self, run_dir: Path, study: StudyRuns) -> bool:
        return saliency_current(run_dir, RunLayout(run_dir).best, study.n_boot, self.tolerance, self.max_images)

    def run(self, run_dir: Path, study: StudyRuns) -> None:
        saliency_run(run_dir, "test", "best", study.device, self.max_images, self.tolerance, None, None, study.n_boot)

    def section(self, study: StudyRuns) -> Section:
        lines, evidence = saliency_section(study.out, study.regimes, study.seeds, study.names, study.n_boot)
        return Section(lines, evidence, {"saliency": {"tolerance_px": self.tolerance, "max_images": self.max_images}})
