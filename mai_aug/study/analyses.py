"""The analyses a comparison runs, built from its options: one entry per analysis (see analyses/base.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mai_aug.analyses.base import StudyAnalysis
from mai_aug.analyses.curves.analysis import CurvesAnalysis
from mai_aug.analyses.curves.study import TrainingSize
from mai_aug.analyses.external.analysis import ExternalAnalysis
from mai_aug.analyses.external.data import ExternalSet
from mai_aug.analyses.robustness.analysis import RobustnessAnalysis
from mai_aug.analyses.saliency.analysis import SaliencyAnalysis
from mai_aug.analyses.tta.analysis import TtaAnalysis

if TYPE_CHECKING:
    from mai_aug.study.compare import CompareOptions


def enabled_analyses(opts: CompareOptions, sizes: list[TrainingSize],
                     external: ExternalSet | None = None) -> list[StudyAnalysis]:
    """The analyses ``opts`` asks for, in report.md's order of sections; ``external``: ``opts.external`` already read."""
    enabled: list[StudyAnalysis] = []
    if opts.tta:
        enabled.append(TtaAnalysis(draws=opts.tta))
    if opts.external is not None:
        enabled.append(ExternalAnalysis(opts.external, external))
    if opts.robustness is not None:
        enabled.append(RobustnessAnalysis(list(opts.robustness), list(opts.robustness_levels),
                                          Path(opts.site_data) if opts.site_data is not None else None))
    if opts.saliency:
        enabled.append(SaliencyAnalysis(opts.saliency_tolerance, opts.saliency_max_images))
    if sizes:
        enabled.append(CurvesAnalysis(sizes))
    return enabled
