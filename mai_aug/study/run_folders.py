"""The study's run folders: which are reused, resumed or stale (by fingerprint), moving stale ones aside, and
the settings of each run."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mai_aug.analyses.curves.study import TrainingSize, training_size
from mai_aug.core.devices import resolve_device
from mai_aug.core.errors import MaiAugError, say
from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.core.locks import RunLock
from mai_aug.data.split import load_datalist, write_datalist
from mai_aug.data.subsets import fraction_label, nested_subset
from mai_aug.engine import distributed
from mai_aug.engine.train import steps_per_epoch
from mai_aug.settings.config import TrainConfig, read_config
from mai_aug.settings.fingerprint import (
    NOT_RESULTS,
    canonical_sha256,
    components,
    read_fingerprint,
    resolved_settings,
    run_status,
)
from mai_aug.settings.layers import build_train_config
from mai_aug.transforms.regimes import load_regime

if TYPE_CHECKING:
    from mai_aug.study.compare import CompareOptions


def plan_curves(out: Path, runs: list[tuple[str, int]], train_opts: dict, opts: CompareOptions, datalist: dict,
                fractions: list[float], split_seed: int, ctx: distributed.DistContext) -> list[TrainingSize]:
    """The learning curve's training sizes: each fraction's nested subset (seeded by ``split_seed``), its runs
    planned in its own folder as :func:`plan_runs` plans the study's (refused where stale, unless ``--retrain``),
    its stale runs moved aside and its datalist written; fraction 1 is the study's own runs.

    Every size trains the full runs' number of steps per epoch, so each run makes the same number of updates.
    """
    full = run_config(StudyLayout(out).run_dir(*runs[0]), runs[0][0], runs[0][1], train_opts, opts)
    steps = steps_per_epoch(full, len(datalist["training"]), ctx.world_size)
    sizes = []
    for fraction in fractions:
        subset = datalist if fraction == 1.0 else nested_subset(datalist, fraction, split_seed)
        size = training_size(out, fraction, subset, datalist, train_opts, steps)
        if size.n_images < full.batch_size:
            raise MaiAugError(f"`train_fraction` {fraction_label(fraction)}: {size.n_images} training images, "
                              f"fewer than the batch size {full.batch_size}; use a larger fraction")
        if fraction != 1.0:
            size.plan = plan_runs(size.folder, runs, size.train_opts, dataclasses.replace(opts, out=size.folder),
                                  subset)
        sizes.append(size)
    ctx.barrier()
    if ctx.is_main:
        for size in sizes:
            if size.plan is not None:
                settle_out(size.folder, size.plan, size.datalist)
            if not opts.quiet:
                say(f"`train_fraction` {fraction_label(size.fraction)}: {size.n_patients} training patients, "
                    f"{size.n_images} images, {steps} steps per epoch")
            if size.no_positives:
                say(f"warning: `train_fraction` {fraction_label(size.fraction)} has no training positives for "
                    f"{', '.join(size.no_positives)}")
    ctx.barrier()
    return sizes


def run_config(run_dir: Path, regime: str, seed: int, train_opts: dict, opts: CompareOptions) -> TrainConfig:
    """The TrainConfig of one run of the comparison (``resume`` where the folder holds a started run)."""
    study = StudyLayout(opts.out)
    return build_train_config([*train_layers(train_opts, opts), ("compare", {
        "out": str(run_dir), "regime": regime, "seed": seed,
        "datalist": str(study.datalist), "regimes_file": [str(p) for p in opts.regimes_file],
        "device": opts.device, "resume": RunLayout(run_dir).config.is_file(),
        "tensorboard_dir": str(study.run_tensorboard(regime, seed)), "hparams": True,
        "cache_dir": str(opts.cache_dir) if opts.cache_dir else None, "progress": not opts.quiet,
    })])


def train_layers(train_opts: dict, opts: CompareOptions) -> list[tuple[str, dict]]:
    """``train_opts`` as the preset's values and the command line's overrides (``config.yaml``'s sources)."""
    given = {k for k, v in opts.train_overrides.items() if v is not None}
    values = copy.deepcopy(train_opts)
    return [("preset", {k: v for k, v in values.items() if k not in given}),
            ("cli", {k: v for k, v in values.items() if k in given})]


def plan_runs(out: Path, runs: list[tuple[str, int]], train_opts: dict, opts: CompareOptions, datalist: dict) -> dict:
    """What becomes of each planned run folder, and which folders in ``out`` are stale; refuses stale ones.

    A run folder is reused (skipped when finished, resumed when interrupted) only where its ``fingerprint.json``
    matches this command's settings (``amp`` and ``augment_on`` as resolved for the device), regime spec, datalist
    content, mai_aug version and code (``--epochs`` may grow for an interrupted run that has begun at most one
    epoch). ``OUT/datalist.json`` is never replaced under runs made from another datalist.

    Returns:
        ``{"runs": {(regime, seed): status}, "stale": [run folders to move aside], "write_datalist": bool}``.

    Raises:
        MaiAugError: some run folders differ and ``opts.retrain`` is not set; the line says what differs.
    """
    statuses, problems = run_statuses(out, runs, train_opts, opts, datalist)
    old_list = StudyLayout(out).datalist
    new_hash = canonical_sha256(datalist)
    replaced = old_list.is_file() and canonical_sha256(load_datalist(old_list)) != new_hash
    write = replaced or not old_list.is_file()
    if write:  # runs outside this command's plan must not end up beside a datalist they were not made from
        problems.update({label: ["made from another datalist"] for label in _orphans(out, statuses, new_hash)})
    if problems and not opts.retrain:
        raise MaiAugError(_refusal(out, problems, replaced))
    return {"runs": statuses, "stale": [out / label for label in problems], "write_datalist": write}


def run_statuses(out: Path, runs: list[tuple[str, int]], train_opts: dict, opts: CompareOptions, datalist: dict
                 ) -> tuple[dict[tuple[str, int], str], dict[str, list[str]]]:
    """Each run's :func:`run_status` against this command's settings, and what differs where a folder does not fit."""
    loaded: dict[str, Any] = {}
    statuses, problems = {}, {}
    device = resolve_device(opts.device)
    for regime, seed in runs:
        run_dir = StudyLayout(out).run_dir(regime, seed)
        config = run_config(run_dir, regime, seed, train_opts, opts)
        if regime not in loaded:
            loaded[regime] = load_regime(regime, config.image_size, config.regimes_file)
        expected = components(config, loaded[regime].spec, datalist,
                              resolved_settings(config, loaded[regime], device))
        status, diffs = run_status(run_dir, expected)
        statuses[(regime, seed)] = status
        if diffs:
            problems[StudyLayout.label(regime, seed)] = diffs
    return statuses, problems


def finished_seeds(out: Path, regimes: list[str], train_opts: dict, opts: CompareOptions, datalist: dict
                   ) -> list[int]:
    """The seeds of ``out`` with a finished run of every regime made with this command's settings (runs of
    earlier commands: ``--seed-list`` adds seeds to a study, and its report covers these too)."""
    found = sorted({seed for regime, seed, _ in StudyLayout(out).run_dirs() if regime in regimes})
    statuses, _ = run_statuses(out, [(r, k) for r in regimes for k in found], train_opts, opts, datalist)
    return [k for k in found if all(statuses[(r, k)] == "finished" for r in regimes)]


def _orphans(out: Path, planned: dict[tuple[str, int], str], datalist_hash: str) -> list[str]:
    """``<regime>/seed-<k>`` of the run folders in ``out`` outside the plan not made from ``datalist_hash``."""
    labels = []
    for regime, seed, run_dir in StudyLayout(out).run_dirs():
        if (regime, seed) in planned:
            continue
        stored = read_fingerprint(run_dir)
        if stored is None and not RunLayout(run_dir).config.is_file():
            continue  # nothing was trained there
        if stored is None or stored.get("datalist_sha256") != datalist_hash:
            labels.append(f"{regime}/{run_dir.name}")  # as the folder is spelled (seed-01 stays seed-01)
    return labels


def _refusal(out: Path, problems: dict[str, list[str]], replaced: bool) -> str:
    """One line: the runs grouped by what differs, and how to proceed."""
    groups: dict[str, list[str]] = {}
    for label, diffs in problems.items():
        groups.setdefault("; ".join(diffs), []).append(label)
    listed = " | ".join(f"{', '.join(labels)}: {diffs}" for diffs, labels in groups.items())
    lead = f"`out` {out}: {StudyLayout(out).datalist} holds another split (other `data` or split settings); " if replaced else f"`out` {out}: "
    return (f"{lead}existing runs differ from this command's: {listed}; use a new `out`, or pass `retrain` to "
            f"retrain the mismatching runs")


def settle_out(out: Path, plan: dict, datalist: dict) -> None:
    """Move stale run folders (with their TensorBoard logs and the datalist they came from) aside; write the datalist.

    Each folder's ``.lock`` is taken first, all of them before anything moves: a run that a ``train`` is writing
    is refused with the holder's pid rather than pulled out from under it.
    """
    if plan["stale"]:
        # Moved, not deleted: a mistaken --retrain must not destroy hours of training.
        aside = _unique(StudyLayout(out).replaced / time.strftime("%Y%m%d-%H%M%S"))
        with contextlib.ExitStack() as locks:
            for run_dir in plan["stale"]:
                if run_dir.is_dir():
                    locks.enter_context(RunLock(RunLayout(run_dir).lock))
            _move_aside(out, plan, aside)
        say(f"`retrain`: moved {len(plan['stale'])} replaced run(s) to {aside}")
    if plan["write_datalist"]:
        write_datalist(datalist, StudyLayout(out).datalist)


def _move_aside(out: Path, plan: dict, aside: Path) -> None:
    """Move the stale runs, their TensorBoard logs and (if replaced) the datalist into ``aside``."""
    study, moved = StudyLayout(out), StudyLayout(aside)
    for run_dir in plan["stale"]:
        regime, seed = run_dir.parent.name, StudyLayout.seed_of(run_dir)
        _move(run_dir, moved.run_dir(regime, seed))
        _move(study.run_tensorboard(regime, seed), moved.run_tensorboard(regime, seed))
    if plan["write_datalist"]:
        _move(study.datalist, moved.datalist)


def _unique(path: Path) -> Path:
    candidate, k = path, 1
    while candidate.exists():
        candidate, k = path.with_name(f"{path.name}-{k}"), k + 1
    return candidate


def _move(source: Path, target: Path) -> None:
    if source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))


def runs_configuration(out: Path, runs: list[tuple[str, int]]) -> dict[str, Any]:
    """The report's configuration, read from the runs' own ``config.yaml``; refuses runs that disagree.

    All runs must share every result-changing setting but ``regime`` and ``seed``.
    """
    configs = {StudyLayout.label(r, k): read_config(StudyLayout(out).run_dir(r, k)) for r, k in runs}
    settings = {label: {k: v for k, v in c.items() if k not in NOT_RESULTS | {"regime", "seed", "resolved"}}
                for label, c in configs.items()}
    (first_label, first), *others = settings.items()
    for label, other in others:
        diffs = [f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in sorted(set(first) | set(other))
                 if first.get(k) != other.get(k)]
        if diffs:
            raise MaiAugError(f"{out}: runs {first_label} and {label} were trained with different settings "
                              f"({'; '.join(diffs)}); pass `retrain` to retrain them alike")
    resolved = configs[first_label].get("resolved", {})
    return {"train": first, "regime_specs": {c["regime"]: c.get("resolved", {}).get("regime") for c in configs.values()},
            "device": resolved.get("device"), "split_sizes": resolved.get("split_sizes"),
            "versions": resolved.get("versions")}
