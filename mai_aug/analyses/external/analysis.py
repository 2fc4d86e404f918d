"""The external test set as a study analysis: every run scored on another dataset, then the generalisation gap."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mai_aug.analyses.base import Section, StudyAnalysis, StudyRuns
from mai_aug.analyses.external.data import ExternalSet, ExternalSpec, read_external
from mai_aug.analyses.external.run import META_FILE, evaluate_external, external_current
from mai_aug.analyses.external.section import external_statistics, write_external_section
from mai_aug.core.layout import RunLayout


@dataclass
class ExternalAnalysis(StudyAnalysis):
    """``compare --external DIR`` (or a preset's ``external:`` phantom): scored after each run's evaluation."""

    name: ClassVar[str] = "external test set"
    spec: ExternalSpec = field(default_factory=lambda: ExternalSpec(Path(".")))
    preread: ExternalSet | None = field(default=None, repr=False)  # the set compare's checks read; None: read on use

    def external_set(self, study: StudyRuns) -> ExternalSet:
        """The external set matched to the study's findings, read once (or given as ``preread``)."""
        if self.preread is None:
            self.preread = read_external(self.spec, list(study.names))
        return self.preread

    def is_current(self, run_dir: Path, study: StudyRuns) -> bool:
        if not RunLayout(run_dir).external_file(self.spec.folder_name, META_FILE).is_file():
            return False  # nothing written yet: no need to read the external set
        return external_current(run_dir, self.spec, self.external_set(study), RunLayout(run_dir).best, study.n_boot)

    def run(self, run_dir: Path, study: StudyRuns) -> None:
        evaluate_external(run_dir, self.spec, "best", study.device, n_boot=study.n_boot,
                          external=self.external_set(study))

    def section(self, study: StudyRuns) -> Section:
        external = self.external_set(study)
        scores = external_statistics(study.out, study.regimes, study.seeds, list(study.names),
                                     self.spec.folder_name, external.matching, study.n_boot, study.baseline)
        shown = self.spec.shown or str(self.spec.data)
        layout = {"nih": "NIH", "chexpert": "CheXpert", "csv": "CSV"}.get(external.dataset, external.dataset)
        description = (f"{shown}, in {layout} layout ("
                       f"{'all images' if self.spec.split == 'all' else 'its official test set'}: "
                       f"{len(external.images)} images")
        lines, evidence = write_external_section(study.out, scores, external.matching, description, study.baseline,
                                                 len(study.seeds), study.n_boot)
        config = {"external": {"data": shown, "dataset": external.dataset, "split": self.spec.split,
                               "name": self.spec.folder_name, "matching": external.matching.record(),
                               "uncertain": self.spec.uncertain, "findings_compared": scores.findings}}
        return Section(lines, evidence, config)
