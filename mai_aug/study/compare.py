"""``mai-aug compare``: train and evaluate every regime on one patient split, then report which differences are real."""


from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mai_aug.analyses.base import StudyAnalysis, StudyRuns
from mai_aug.analyses.curves.study import TrainingSize
from mai_aug.analyses.external.data import ExternalSet, ExternalSpec, check_not_training_data, read_external
from mai_aug.analyses.robustness.run import site_items
from mai_aug.analyses.saliency.resolution import check_saliency_map
from mai_aug.core.choices import DEFAULT_BOOTSTRAP
from mai_aug.core.devices import resolve_device
from mai_aug.core.errors import MaiAugError, say
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout, StudyLayout, cache_root
from mai_aug.core.locks import StudyLock
from mai_aug.core.preflight import require_writable_folder
from mai_aug.data.boxes import find_box_file
from mai_aug.data.datasets import DataSource
from mai_aug.data.images import check_image_headers, check_images_if_asked
from mai_aug.data.phantom import RECORD_NAME as PHANTOM_RECORD
from mai_aug.data.prepare import split_data
from mai_aug.data.split import split_table
from mai_aug.data.subsets import check_fractions
from mai_aug.engine import distributed
from mai_aug.engine.train import check_trainable
from mai_aug.networks.spec import canonical_name, lookup_network
from mai_aug.settings.config import TrainConfig
from mai_aug.settings.presets import load_preset
from mai_aug.settings.schema import BY_NAME
from mai_aug.stats.paired import primary_column
from mai_aug.stats.planning import DEFAULT_DETECT
from mai_aug.stats.scores import resolve_metrics
from mai_aug.study.analyses import enabled_analyses
from mai_aug.study.execute import run_jobs, study_jobs
from mai_aug.study.executors.base import ExecutorOptions
from mai_aug.study.executors.select import Executor, make_executor
from mai_aug.study.jobs import JobOutcome
from mai_aug.study.missing import (
    MissingRun,
    failure_summary,
    missing_lines,
    missing_runs,
    no_report_message,
    report_seeds,
)
from mai_aug.study.phantom_cache import ensure_phantom, phantom_folder
from mai_aug.study.phantom_cache import phantom_module as phantom_module  # tests replace its __file__
from mai_aug.study.report import write_report
from mai_aug.study.run_folders import (
    finished_seeds,
    plan_curves,
    plan_runs,
    run_config,
    runs_configuration,
    settle_out,
)
from mai_aug.study.seed_list import check_seeds
from mai_aug.transforms.regimes import available_regimes, load_regime
from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels


@dataclass
class CompareOptions:
    """What the command line asked for; ``None`` leaves the preset's value."""

    out: Path
    data: Path | None = None
    preset: str = "demo"
    regimes: list[str] | None = None
    seeds: list[int] | None = None  # --seeds / --seed-list; None: 0 to the preset's seeds - 1, else seed 0
    regimes_file: list[str] = field(default_factory=list)
    device: str = "auto"
    cache_dir: Path | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    bootstrap: int | None = None
    quiet: bool = False
    retrain: bool = False
    verify_images: bool = False
    skip_bad_images: bool = False
    data_options: dict[str, Any] = field(default_factory=dict)  # --csv, --dataset and its options (for --data)
    robustness: list[str] | None = None  # shift types of the test-time sweep (``--robustness``); None: no sweep
    robustness_levels: list[str] = field(default_factory=list)
    site_data: Path | None = None
    tta: int = 0  # test-time augmentation draws in each run's evaluation (``--tta``); 0: none
    saliency: bool = False  # the pointing game of every run (``--saliency``)
    saliency_tolerance: float | None = None  # pixels at the network input; None: the default fraction of the side
    saliency_max_images: int | None = None
    saliency_force: bool = False  # play the pointing game on a Grad-CAM map smaller than 8x8 (``--saliency-force``)
    train_fractions: list[float] | None = None  # training sizes of the learning curve (``--train-fraction``); None: none
    detect: float | None = None  # the difference the planning section sizes (``--detect``); None: the preset's, else 0.01
    export_tables: bool = False  # report.md's tables also as OUT/tables/*.csv and *.tex (``--export-tables``)
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)  # where the runs go (``--executor``)
    report_only: bool = False  # train nothing: report the finished runs, list the others (``--report-only``)
    external: ExternalSpec | None = None  # every run also scored on another dataset (``--external``, a preset's)


def run_compare(opts: CompareOptions) -> pd.DataFrame | None:
    """Train and evaluate each regime x seed into ``OUT/<regime>/seed-<k>`` and write the comparison report.

    Existing run folders are reused only where their fingerprint matches this command's (see :func:`plan_runs`).
    Every run is a job for ``opts.executor`` (this process, Ray, SLURM); a failed job does not stop the others, and
    the report covers the seeds whose runs all finished, listing the rest (then the command fails, naming them).
    Under torchrun every rank trains (DDP); rank 0 alone generates data, evaluates and reports (others get None).
    """
    ctx = distributed.init(resolve_device(opts.device).type)
    preset = load_preset(opts.preset)
    opts = _preset_defaults(opts, preset)
    executor = _check_executor(opts, ctx)  # a missing package or an unreachable cluster stops before work
    study = _plan_study(opts, preset, ctx)
    opts = dataclasses.replace(opts, external=study.external)
    analyses = enabled_analyses(opts, study.sizes, study.external_set)
    outcomes = [] if executor is None else run_jobs(
        executor, study_jobs(opts, study.runs, study.train_opts, study.sizes, analyses,
                             _study_runs(opts, study, tuple(opts.seeds))), ctx.is_main)
    if not ctx.is_main:
        return None
    summary = _write_study_report(opts, preset, study, analyses, outcomes)
    failed = [o for o in outcomes if not o.done]
    if failed:
        raise MaiAugError(failure_summary(failed, len(outcomes), StudyLayout(opts.out).report))
    return summary


def _study_runs(opts: CompareOptions, study: _Study, seeds: tuple[int, ...]) -> StudyRuns:
    """What the analyses read of the study: its folder, regimes, ``seeds``, findings, resamples and device."""
    return StudyRuns(Path(opts.out), study.regimes, seeds, list(study.datalist["labels"]), study.n_boot, opts.device)


def _check_executor(opts: CompareOptions, ctx: distributed.DistContext) -> Executor | None:
    """The executor of ``--executor`` (none for ``--report-only``); Ray and SLURM start their own processes, so not
    under torchrun."""
    if ctx.enabled and opts.executor.remote:
        raise MaiAugError(f"`executor` {opts.executor.kind}: not under torchrun (each run is its own job there; "
                          f"use `gpus_per_run` or `slurm_gpus_per_run` for several GPUs)")
    if opts.report_only and opts.retrain:
        raise MaiAugError("`report_only` trains nothing: it cannot `retrain`")
    return None if opts.report_only else make_executor(opts.executor, StudyLayout(opts.out))


@dataclass
class _Study:
    """What :func:`run_compare` planned: the regimes, runs and their plan, the datalist and the learning-curve sizes."""

    regimes: list[str]
    runs: list[tuple[str, int]]
    plan: dict
    train_opts: dict
    datalist: dict
    source: str
    metrics: list[str]
    n_boot: int
    sizes: list[TrainingSize]
    external: ExternalSpec | None = None
    external_set: ExternalSet | None = None  # ``external`` read and checked once, for its analysis


def _plan_study(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext) -> _Study:
    """Check every setting (before anything is created), split the data, plan and settle the run folders."""
    checked = _check_settings(opts, preset, ctx)
    datalist, source = _study_datalist(opts, preset, ctx, checked.config)
    if opts.robustness is not None and opts.site_data is not None:  # refused before anything trains
        site_items(datalist["test"], Path(opts.site_data))
    if opts.saliency:  # no box list: refused before anything trains
        _require_boxes(datalist, opts.data)
    if preset.get("primary", "macro") != "macro":  # a primary finding the data has: refused before anything trains
        primary_column(preset["primary"], datalist["labels"], np.arange(1 + len(datalist["labels"])))
    external, external_set = _study_external(opts, preset, ctx), None
    if external is not None:  # a bad name or image, nothing matching, the study's own images: refused before training
        RunLayout.part(external.folder_name, "`external_name`")
        external_set = read_external(external, datalist["labels"])
        check_not_training_data(external_set, datalist, Path(opts.out))
        check_image_headers(external_set.images)
    out, train_opts = Path(opts.out), checked.train_opts
    runs = [(r, k) for r in checked.regimes for k in opts.seeds]
    plan = plan_runs(out, runs, train_opts, opts, datalist)  # every rank reads the same folders, refuses alike
    ctx.barrier()
    if ctx.is_main and not opts.report_only:
        settle_out(out, plan, datalist)
    ctx.barrier()
    sizes = (plan_curves(out, runs, train_opts, opts, datalist, checked.fractions,
                         int(preset.get("data", {}).get("seed", 0)), ctx) if checked.fractions else [])
    _report_split(datalist, ctx.is_main and not opts.quiet, ctx.is_main)
    n_boot = opts.bootstrap or int(preset.get("bootstrap", DEFAULT_BOOTSTRAP))
    return _Study(checked.regimes, runs, plan, train_opts, datalist, source, checked.metrics, n_boot, sizes, external,
                  external_set)


def _study_external(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext) -> ExternalSpec | None:
    """``--external``'s set, else the preset's ``external:`` phantom (generated once into the cache), else None."""
    entry = preset.get("external")
    if opts.external is not None or entry is None:
        return opts.external
    cache_dir = opts.cache_dir or cache_root()
    if ctx.is_main:
        ensure_phantom(entry["phantom"], cache_dir, opts.quiet)
    ctx.barrier()
    return ExternalSpec(phantom_folder(entry["phantom"], cache_dir), split=entry.get("split", "all"),
                        lesion=bool(entry.get("lesion", False)),
                        uncertain=entry.get("uncertain"),
                        name=entry.get("name", "external"),
                        shown=f"a second site, synthetic ({phantom_folder(entry['phantom'], cache_dir).name}, "
                              f"generated into mai_aug's cache)")


@dataclass
class _Settings:
    """The study's settings, checked before any data is made or any folder created."""

    regimes: list[str]
    fractions: list[float] | None
    metrics: list[str]
    train_opts: dict
    config: TrainConfig  # one run's: what every run is checked with against the split before --out is created


def _check_settings(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext) -> _Settings:
    """Check every setting and their combinations; nothing is generated, cached or written yet.

    Raises:
        MaiAugError: the first bad setting, in one line.
    """
    regimes = _check_runs(opts, preset)
    fractions = check_fractions(opts.train_fractions) if opts.train_fractions is not None else None
    _check_data_options(opts)
    if not opts.saliency and (opts.saliency_tolerance is not None or opts.saliency_max_images is not None):
        raise MaiAugError("`saliency_tolerance` and `saliency_max_images` need `saliency`")
    if opts.saliency_force and not opts.saliency:
        raise MaiAugError("`saliency_force` needs `saliency`")
    _check_out(Path(opts.out))
    if ctx.is_main:
        require_writable_folder(Path(opts.out), "`out`")  # before the phantom is generated and the runs train
    metrics = [m.name for m in resolve_metrics(opts.train_overrides.get("metrics")
                                               or preset.get("train", {}).get("metrics"))]
    if opts.robustness is not None:
        parse_levels(opts.robustness_levels, opts.robustness or list(SHIFT_TYPES), "`robustness_levels`")
    train_opts = {**preset.get("train", {}), **{k: v for k, v in opts.train_overrides.items() if v is not None}}
    _override_network(train_opts, preset.get("train", {}), opts.train_overrides.get("network"))
    for regime in regimes:  # each regime (and the run settings) loads at the study's size
        config = run_config(StudyLayout(opts.out).run_dir(regime, 0), regime, 0, train_opts, opts)
        load_regime(regime, config.image_size, config.regimes_file)
    if opts.saliency:  # a map too coarse for the pointing game: refused before anything trains
        check_saliency_map(config, opts.saliency_force)
    return _Settings(regimes, fractions, metrics, train_opts, config)


def _check_data_options(opts: CompareOptions) -> None:
    """Dataset options only with ``--data`` (a preset's data keys are checked with the preset); ``--external`` a
    folder."""
    if opts.data is None and any(v != BY_NAME[k].default_value() for k, v in opts.data_options.items()):
        raise MaiAugError("`csv`, `dataset` and their options need `data` (the phantom is in NIH's layout)")
    if opts.external is not None and not Path(opts.external.data).is_dir():
        raise MaiAugError(f"`external` {opts.external.data}: not a folder")


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not a comparison (nothing is written)."""
    study = StudyLayout(out)
    if out.exists() and not out.is_dir():
        raise MaiAugError(f"`out` {out}: exists and is not a folder")
    if out.is_dir() and not study.is_study() and any(out.iterdir()):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise MaiAugError(f"`out` {out}: not empty and not a comparison folder (it holds {shown}...; no "
                          f"{study.marker.name} or run folders); give a new or empty folder, its files would be "
                          f"overwritten")


def _claim_out(out: Path, ctx: distributed.DistContext) -> None:
    """Make ``out`` a comparison folder: new, empty, or one already (:meth:`StudyLayout.is_study`); marked first.

    A non-empty folder that is not a comparison (a user's own ``datalist.json``, ``report.md``...) is refused:
    the comparison would overwrite files it did not write. Every rank checks before rank 0 writes anything.
    """
    study = StudyLayout(out)
    _check_out(out)
    ctx.barrier()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"`out` {out}: cannot create ({e.strerror})") from None
    if ctx.is_main:
        require_writable_folder(out, "`out`")  # before the phantom is generated and the runs train
        if not study.marker.is_file():
            write_text_atomic(study.marker, "a mai-aug compare folder: its runs, datalist and reports\n")


def _write_study_report(opts: CompareOptions, preset: dict[str, Any], study: _Study,
                        analyses: list[StudyAnalysis], outcomes: list[JobOutcome]) -> pd.DataFrame:
    """Under the study's report lock: the seeds every regime finished, each enabled analysis (shift sweeps,
    saliency, TTA, learning curve) brought up to date and its section, the missing runs, then report.md."""
    out, regimes = Path(opts.out), study.regimes
    with StudyLock(StudyLayout(out).report_lock):
        candidates = sorted({*opts.seeds, *finished_seeds(out, regimes, study.train_opts, opts, study.datalist)})
        seeds = report_seeds(out, regimes, candidates, study.sizes)
        missing = missing_runs(out, study.runs, study.sizes, seeds, outcomes)
        if not seeds:
            raise MaiAugError(no_report_message(missing))
        return _report(opts, preset, study, analyses, _study_runs(opts, study, tuple(seeds)), missing)


def _report(opts: CompareOptions, preset: dict[str, Any], study: _Study, analyses: list[StudyAnalysis],
            runs: StudyRuns, missing: list[MissingRun]) -> pd.DataFrame:
    """report.md over the finished seeds of ``runs``: the analyses' sections, the missing runs listed."""
    out, regimes, n_boot = Path(opts.out), study.regimes, study.n_boot
    config = {"preset": opts.preset, "preset_values": {k: v for k, v in preset.items() if k != "train"},
              "data": study.source, "regimes": regimes, "seeds": len(runs.seeds), "seed_list": list(runs.seeds),
              "bootstrap": n_boot, "metrics": study.metrics,
              **runs_configuration(out, [(r, k) for r in regimes for k in runs.seeds])}
    if missing:
        config["missing_runs"] = {m.label: m.reason for m in missing}
    sections, evidence = missing_lines(missing, runs.seeds), []
    for analysis in analyses:
        analysis.update(runs)
        part = analysis.section(runs)
        sections, evidence = [*sections, *part.lines], [*evidence, *part.evidence]
        config.update(part.config)
    primary = str(preset.get("primary", "macro"))
    detect = opts.detect or float(preset.get("detect", DEFAULT_DETECT))
    config.update(primary=primary, detect=detect)
    return write_report(out, regimes, runs.seeds, study.datalist, n_boot, config, study.metrics, sections, evidence,
                        primary, detect, opts.export_tables)


def _preset_defaults(opts: CompareOptions, preset: dict[str, Any]) -> CompareOptions:
    """``opts`` with the preset's ``seeds``, and its ``robustness`` sweep where the command line asked for none."""
    opts = dataclasses.replace(opts, seeds=list(opts.seeds or range(int(preset.get("seeds", 1)))))
    sweep = preset.get("robustness")
    if opts.robustness is None and sweep is not None:
        opts = dataclasses.replace(opts, robustness=list(sweep.get("shifts", [])),
                                   robustness_levels=opts.robustness_levels or list(sweep.get("levels", [])))
    if opts.robustness is None and (opts.robustness_levels or opts.site_data):
        raise MaiAugError("`robustness_levels` and `site_data` need `robustness` (or a preset with a robustness sweep)")
    return opts


def _check_runs(opts: CompareOptions, preset: dict[str, Any]) -> list[str]:
    """The regimes to compare (the command line's, else the preset's), each known; at least one seed."""
    regimes = opts.regimes or preset.get("regimes", ["none", "basic", "complex"])
    known = available_regimes(opts.regimes_file)
    for r in regimes:
        if r not in known:
            raise MaiAugError(f"`regimes`: unknown regime {r!r} (available: {', '.join(known)})")
    repeated = sorted({r for r in regimes if regimes.count(r) > 1})
    if repeated:
        raise MaiAugError(f"`regimes`: {', '.join(map(repr, repeated))} given more than once; name each regime once "
                          f"(`seeds` N trains N seeds of each)")
    check_seeds(opts.seeds)
    return regimes


def _require_boxes(datalist: dict, data: Path | None) -> None:
    """``--saliency`` needs the data's ``BBox_List_2017.csv`` (the phantom writes one)."""
    if find_box_file([it["image"] for it in datalist["test"]], data) is None:
        raise MaiAugError("`saliency`: the data has no BBox_List_2017.csv beside its images (NIH's box list)")


def _study_datalist(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext,
                    config: TrainConfig) -> tuple[dict, str]:
    """The comparison's patient split of ``--data`` (or of the cached phantom) and a line naming its source.

    The runs' sizes and network (``config``'s) are checked against the split before ``--out`` is created.
    """
    data_opts = dict(preset.get("data", {}))
    if opts.data is None:
        spec, cache_dir = preset.get("phantom", {}), opts.cache_dir or cache_root()
        if ctx.is_main:
            ensure_phantom(spec, cache_dir, opts.quiet)
        ctx.barrier()  # other ranks wait for rank 0 to write it
        data_dir = phantom_folder(spec, cache_dir)  # named without the local cache's path (report.md is shared)
        source = f"synthetic phantom ({data_dir.name}, generated into mai_aug's cache)"
    else:
        data_dir = Path(opts.data)  # a phantom written by `mai-aug phantom` keeps its record: say it is synthetic
        source = f"synthetic phantom ({data_dir})" if (data_dir / PHANTOM_RECORD).is_file() else str(opts.data)
    images = data_opts.pop("images", None)
    reader = DataSource(data=data_dir, images=(data_dir / images) if images else None,
                        **(opts.data_options if opts.data is not None else {}))
    datalist = split_data(data_dir, report=say, source=reader, **data_opts)
    check_images = partial(check_images_if_asked, verify=opts.verify_images, skip=opts.skip_bad_images, report=say,
                           bad_list=StudyLayout(opts.out).bad_images, progress=not opts.quiet)
    if not opts.skip_bad_images:  # headers, or --verify-images' full decode: a refusal creates nothing
        datalist = check_images(datalist)
    check_trainable(config, datalist)  # a batch above the split, a --pretrained file that does not fit...
    _claim_out(Path(opts.out), ctx)  # once the data has been read: a refused split creates nothing
    return (check_images(datalist) if opts.skip_bad_images else datalist), source


def _report_split(datalist: dict, table: bool, warn: bool) -> None:
    sizes = split_table(datalist)
    if table:
        print(sizes.to_string(), file=sys.stderr)
    no_test_positives = [n for n in datalist["labels"] if sizes.loc[n, "test"] == 0]
    if warn and no_test_positives:
        print(f"warning: no test positives for {', '.join(no_test_positives)}: their AUC is undefined", file=sys.stderr)


def _override_network(train_opts: dict, preset_train: dict, network: str | None) -> None:
    """``--network`` over the preset's: checked now; the preset's network_args go with the preset's network only."""
    if network is None:
        return
    lookup_network(network, None, where="`network`")
    if canonical_name(network) != canonical_name(preset_train.get("network", "densenet121")) \
            and train_opts.pop("network_args", None):
        say(f"note: `network` {network} replaces the preset's network; its network_args are not used")
