"""Which seeds a study's report covers, and the runs it leaves out: failed, interrupted or never trained.

A seed is reported where every regime's run of it (and of each learning-curve size) has finished training and its
test evaluation is current: the paired statistics compare seed j of every regime. The runs of the other seeds are
listed in report.md with why (the failed job's message and logs, from this process or from ``RUN/job_failure.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mai_aug.analyses.curves.study import TrainingSize
from mai_aug.analyses.trained_run import evaluated_with
from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.reports.words import plural
from mai_aug.study.jobs import JobOutcome, read_failure


@dataclass(frozen=True)
class MissingRun:
    """A planned run the report leaves out, and why."""

    label: str
    reason: str


def run_complete(run_dir: Path) -> bool:
    """Trained to its end (``DONE``) and evaluated on the test split from its best checkpoint as it is now."""
    layout = RunLayout(run_dir)
    return layout.done.is_file() and evaluated_with(run_dir, "test", layout.best)


def report_seeds(out: Path, regimes: Sequence[str], candidates: Sequence[int], sizes: Sequence[TrainingSize]
                 ) -> list[int]:
    """The seeds of ``candidates`` whose runs are complete for every regime, in the study and each smaller size."""
    folders = [Path(out), *(s.folder for s in sizes if s.plan is not None)]
    return [k for k in candidates
            if all(run_complete(StudyLayout(f).run_dir(r, k)) for f in folders for r in regimes)]


def missing_runs(out: Path, runs: Sequence[tuple[str, int]], sizes: Sequence[TrainingSize], seeds: Sequence[int],
                 outcomes: Sequence[JobOutcome]) -> list[MissingRun]:
    """The planned runs (study and learning curve) outside the reported ``seeds``, each with why."""
    told = {o.label: o for o in outcomes}
    folders = [(Path(out), ""), *((s.folder, f"{s.folder.name}/") for s in sizes if s.plan is not None)]
    missing = []
    for folder, prefix in folders:
        for regime, seed in runs:
            if seed in seeds:
                continue
            label, run_dir = f"{prefix}{StudyLayout.label(regime, seed)}", StudyLayout(folder).run_dir(regime, seed)
            missing.append(MissingRun(label, _reason(run_dir, told.get(label))))
    return missing


def _reason(run_dir: Path, outcome: JobOutcome | None) -> str:
    """Why a run is not reported: its job's failure (this process's, else the recorded one), or its state."""
    if outcome is not None and not outcome.done:
        return f"failed: {outcome.message}" + (f" (logs: {', '.join(outcome.logs)})" if outcome.logs else "")
    record = read_failure(run_dir)
    if record is not None:
        logs = ", ".join(map(str, record.get("logs") or []))
        return f"failed: {record.get('message')}" + (f" (logs: {logs})" if logs else "")
    if run_complete(run_dir):
        return "finished; another regime's run of this seed is missing"
    if RunLayout(run_dir).config.is_file():
        return "not finished (interrupted, or still running elsewhere)"
    return "not trained yet"


def missing_lines(missing: Sequence[MissingRun], seeds: Sequence[int]) -> list[str]:
    """report.md's section on the runs it leaves out (none where every planned run is in)."""
    if not missing:
        return []
    return ["## Runs missing from this report", "",
            f"This report covers {plural(len(seeds), 'seed')} ({', '.join(map(str, seeds))}): a seed is reported where "
            f"every regime's run of it finished. Left out ({len(missing)}); running the same command again trains "
            f"only these (an interrupted run resumes from its last checkpoint):", "",
            *[f"- `{m.label}`: {m.reason}" for m in missing], ""]


def no_report_message(missing: Sequence[MissingRun]) -> str:
    """The one line when no seed has every regime's run finished."""
    shown = "; ".join(f"{m.label}: {m.reason}" for m in missing[:3])
    more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
    return f"no seed has a finished run of every regime, so there is no report: {shown}{more}"


def failure_summary(failed: Sequence[JobOutcome], total: int, report: Path) -> str:
    """The one line after a study whose jobs did not all succeed (the report covers the others)."""
    first = failed[0]
    where = f" (see {first.logs[0]})" if first.logs else ""
    return (f"{len(failed)} of {total} runs failed ({', '.join(o.label for o in failed)}); first: {first.label}: "
            f"{first.message}{where}; {report} covers the finished seeds and lists the missing runs; run the same "
            f"command again to retry only those")
