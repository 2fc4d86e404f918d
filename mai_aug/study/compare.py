"""``mai-aug compare``: train and evaluate every regime on one patient split, then report which differences are real."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mai_aug.analyses.curves.study import TrainingSize, curve_statistics, training_size, write_curve_report
from mai_aug.analyses.evaluate.run import evaluate_run
from mai_aug.analyses.robustness.run import robustness_run, site_items, swept_with
from mai_aug.analyses.robustness.section import load_sweeps, sweep_statistics, write_sweep_report
from mai_aug.analyses.saliency.resolution import check_saliency_map
from mai_aug.analyses.saliency.study import saliency_section, sweep_saliency
from mai_aug.analyses.trained_run import evaluated_with
from mai_aug.analyses.tta.section import tta_section
from mai_aug.core.devices import resolve_device
from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.core.locks import RunLock
from mai_aug.core.preflight import require_writable_folder
from mai_aug.core.user_yaml import read_user_yaml
from mai_aug.data.boxes import find_box_file
from mai_aug.data.datasets import DataSource
from mai_aug.data.images import check_images_if_asked
from mai_aug.data.phantom import RECORD_NAME as PHANTOM_RECORD
from mai_aug.data.prepare import split_data
from mai_aug.data.split import load_datalist, split_table, write_datalist
from mai_aug.data.subsets import check_fractions, fraction_label, nested_subset
from mai_aug.engine import distributed
from mai_aug.engine.train import steps_per_epoch, train
from mai_aug.networks.spec import canonical_name, lookup_network
from mai_aug.reports.findings import Evidence, smallest_size, strongest_losses, strongest_shifts
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
from mai_aug.settings.presets import check_preset
from mai_aug.stats.paired import baseline_regime, primary_column
from mai_aug.stats.planning import DEFAULT_DETECT
from mai_aug.stats.scores import resolve_metrics
from mai_aug.study.phantom_cache import default_cache_dir, ensure_phantom, phantom_folder
from mai_aug.study.phantom_cache import phantom_module as phantom_module  # tests replace its __file__
from mai_aug.study.report import write_report
from mai_aug.transforms.regimes import available_regimes, load_regime
from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels

PRESETS = ("demo", "article", "full", "robustness")


def preset_path(name: str) -> Path:
    """A shipped preset by name, or a YAML file."""
    if name in PRESETS:
        return Path(str(resources.files("mai_aug") / "configs" / "presets" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise MaiAugError(f"--preset {name!r}: not one of {', '.join(PRESETS)} nor a YAML file")
    return path


def load_preset(name: str) -> dict[str, Any]:
    """A preset by name or file, read as data (no aliases) and checked (:func:`mai_aug.settings.presets.check_preset`)."""
    preset = read_user_yaml(preset_path(name), f"--preset {name}") or {}
    return check_preset(preset, name)


@dataclass
class CompareOptions:
    """What the command line asked for; ``None`` leaves the preset's value."""

    out: Path
    data: Path | None = None
    preset: str = "demo"
    regimes: list[str] | None = None
    seeds: int | None = None  # None: the preset's, else 1
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


def run_compare(opts: CompareOptions) -> pd.DataFrame | None:
    """Train and evaluate each regime x seed into ``OUT/<regime>/seed-<k>`` and write the comparison report.

    Existing run folders are reused only where their fingerprint matches this command's (see :func:`plan_runs`).
    Under torchrun every rank trains (DDP); rank 0 alone generates data, evaluates and reports (others get None).
    """
    ctx = distributed.init(resolve_device(opts.device).type)
    preset = load_preset(opts.preset)
    opts = _preset_defaults(opts, preset)
    study = _plan_study(opts, preset, ctx)
    _run_all(opts, study.runs, study.plan, study.train_opts, study.n_boot, ctx)
    curve_runs(study.sizes, study.runs, opts, study.n_boot, ctx)
    if not ctx.is_main:
        return None
    return _write_study_report(opts, preset, study)


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


def _plan_study(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext) -> _Study:
    """Check every setting (before anything is created), split the data, plan and settle the run folders."""
    checked = _check_settings(opts, preset, ctx)
    datalist, source = _study_datalist(opts, preset, ctx)
    if opts.robustness is not None and opts.site_data is not None:  # refused before anything trains
        site_items(datalist["test"], Path(opts.site_data))
    if opts.saliency:  # no box list: refused before anything trains
        _require_boxes(datalist, opts.data)
    if preset.get("primary", "macro") != "macro":  # a primary finding the data has: refused before anything trains
        primary_column(preset["primary"], datalist["labels"], np.arange(1 + len(datalist["labels"])))
    out, train_opts = Path(opts.out), checked.train_opts
    runs = [(r, k) for r in checked.regimes for k in range(opts.seeds)]
    plan = plan_runs(out, runs, train_opts, opts, datalist)  # every rank reads the same folders, refuses alike
    ctx.barrier()
    if ctx.is_main:
        _settle_out(out, plan, datalist)
    ctx.barrier()
    sizes = (plan_curves(out, runs, train_opts, opts, datalist, checked.fractions,
                         int(preset.get("data", {}).get("seed", 0)), ctx) if checked.fractions else [])
    _report_split(datalist, ctx.is_main and not opts.quiet, ctx.is_main)
    n_boot = opts.bootstrap or int(preset.get("bootstrap", 1000))
    return _Study(checked.regimes, runs, plan, train_opts, datalist, source, checked.metrics, n_boot, sizes)


@dataclass
class _Settings:
    """The study's settings, checked before any data is made or any folder created."""

    regimes: list[str]
    fractions: list[float] | None
    metrics: list[str]
    train_opts: dict


def _check_settings(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext) -> _Settings:
    """Check every setting and their combinations; nothing is generated, cached or written yet.

    Raises:
        MaiAugError: the first bad setting, in one line.
    """
    regimes = _check_runs(opts, preset)
    fractions = check_fractions(opts.train_fractions) if opts.train_fractions is not None else None
    _check_data_options(opts, preset)
    if not opts.saliency and (opts.saliency_tolerance is not None or opts.saliency_max_images is not None):
        raise MaiAugError("--saliency-tolerance and --saliency-max-images need --saliency")
    if opts.saliency_force and not opts.saliency:
        raise MaiAugError("--saliency-force needs --saliency")
    _check_out(Path(opts.out))
    if ctx.is_main:
        require_writable_folder(Path(opts.out), "--out")  # before the phantom is generated and the runs train
    metrics = [m.name for m in resolve_metrics(opts.train_overrides.get("metrics")
                                               or preset.get("train", {}).get("metrics"))]
    if opts.robustness is not None:
        parse_levels(opts.robustness_levels, opts.robustness or list(SHIFT_TYPES), "--robustness-levels")
    train_opts = {**preset.get("train", {}), **{k: v for k, v in opts.train_overrides.items() if v is not None}}
    _override_network(train_opts, preset.get("train", {}), opts.train_overrides.get("network"))
    for regime in regimes:  # each regime (and the run settings) loads at the study's size
        config = _run_config(StudyLayout(opts.out).run_dir(regime, 0), regime, 0, train_opts, opts)
        load_regime(regime, config.image_size, config.regimes_file)
    if opts.saliency:  # a map too coarse for the pointing game: refused before anything trains
        check_saliency_map(config, opts.saliency_force)
    return _Settings(regimes, fractions, metrics, train_opts)


def _check_data_options(opts: CompareOptions, preset: dict[str, Any]) -> None:
    """The data options combine: dataset options only with ``--data``; the preset's data keys known."""
    if opts.data is None and any(v not in (None, "auto", "|", []) for v in opts.data_options.values()):
        raise MaiAugError("--csv, --dataset and their options need --data (the phantom is in NIH's layout)")
    unknown = set(preset.get("data", {})) - {"split", "val_frac", "test_frac", "seed", "images"}
    if unknown:
        raise MaiAugError(f"--preset {opts.preset}: unknown data key(s) {', '.join(sorted(unknown))}")


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that is not a comparison (nothing is written)."""
    study = StudyLayout(out)
    if out.exists() and not out.is_dir():
        raise MaiAugError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not study.is_study() and any(out.iterdir()):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise MaiAugError(f"--out {out}: not empty and not a comparison folder (it holds {shown}...; no "
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
        raise MaiAugError(f"--out {out}: cannot create ({e.strerror})") from None
    if ctx.is_main:
        require_writable_folder(out, "--out")  # before the phantom is generated and the runs train
        if not study.marker.is_file():
            write_text_atomic(study.marker, "a mai-aug compare folder: its runs, datalist and reports\n")


def _write_study_report(opts: CompareOptions, preset: dict[str, Any], study: _Study) -> pd.DataFrame:
    """The extra studies' sections and evidence (shift sweeps, saliency, TTA, learning curve), then report.md."""
    out, regimes, n_boot, names = Path(opts.out), study.regimes, study.n_boot, list(study.datalist["labels"])
    baseline = baseline_regime(regimes)
    config = {"preset": opts.preset, "preset_values": {k: v for k, v in preset.items() if k != "train"},
              "data": study.source, "regimes": regimes, "seeds": opts.seeds, "bootstrap": n_boot,
              "metrics": study.metrics, **runs_configuration(out, study.runs), **({"tta": opts.tta} if opts.tta else {})}
    sections, evidence = [], []
    if opts.robustness is not None:
        config["robustness"] = {"levels": parse_levels(opts.robustness_levels, opts.robustness or list(SHIFT_TYPES)),
                                "site_data": str(opts.site_data) if opts.site_data is not None else None}
        sections, evidence = sweep_runs(out, regimes, opts, n_boot, names)
    if opts.saliency:
        lines, pointing = _saliency_section(out, regimes, opts, n_boot, names)
        sections, evidence = [*sections, *lines], [*evidence, *pointing]
        config["saliency"] = {"tolerance_px": opts.saliency_tolerance, "max_images": opts.saliency_max_images}
    if opts.tta:
        sections = [*tta_section(out, regimes, opts.seeds, names, n_boot, opts.tta), *sections]
    if study.sizes:
        config["train_fractions"] = {fraction_label(s.fraction): s.record() for s in study.sizes}
        curve = curve_statistics(study.sizes, regimes, opts.seeds, names, n_boot, baseline)
        sections = [*sections, *write_curve_report(out, curve, study.sizes, baseline, opts.seeds, n_boot)]
        evidence = [*evidence, *smallest_size(curve, baseline)]
    primary = str(preset.get("primary", "macro"))
    detect = opts.detect or float(preset.get("detect", DEFAULT_DETECT))
    config.update(primary=primary, detect=detect)
    return write_report(out, regimes, opts.seeds, study.datalist, n_boot, config, study.metrics, sections, evidence,
                        primary, detect)


def sweep_runs(out: Path, regimes: list[str], opts: CompareOptions, n_boot: int,
               names: list[str]) -> tuple[list[str], list[Evidence]]:
    """``mai-aug robustness`` of every run (unless its sweep is current), then the paired statistics per shift level:
    ``robustness.csv``, ``robustness_area.csv``, ``robustness_<shift>.png``; returns report.md's section and the
    differences at each shift's strongest level (for "What this study shows")."""
    shifts = opts.robustness or list(SHIFT_TYPES)
    levels = parse_levels(opts.robustness_levels, shifts)
    for regime in regimes:
        for seed in range(opts.seeds):
            run_dir = StudyLayout(out).run_dir(regime, seed)
            if not swept_with(run_dir, RunLayout(run_dir).best, levels, n_boot, opts.site_data):
                print(f"robustness sweep of {regime} seed {seed}", file=sys.stderr, flush=True)
                robustness_run(run_dir, shifts, opts.robustness_levels, "test", "best", opts.device, n_boot=n_boot,
                               site_data=opts.site_data)
    baseline = baseline_regime(regimes)
    labels, patients, sweeps = load_sweeps(out, regimes, opts.seeds, list(names))
    curve, area, loss = sweep_statistics(labels, patients, sweeps, list(names), n_boot, baseline)
    identity = {**{name: kind.identity for name, kind in SHIFT_TYPES.items()}, "site": 0.0}
    return (write_sweep_report(out, curve, area, loss, baseline, opts.seeds, n_boot),
            [*strongest_shifts(curve, baseline, identity), *strongest_losses(loss, baseline, identity)])


def _preset_defaults(opts: CompareOptions, preset: dict[str, Any]) -> CompareOptions:
    """``opts`` with the preset's ``seeds``, and its ``robustness`` sweep where the command line asked for none."""
    opts = dataclasses.replace(opts, seeds=opts.seeds or int(preset.get("seeds", 1)))
    sweep = preset.get("robustness")
    if opts.robustness is None and sweep is not None:
        opts = dataclasses.replace(opts, robustness=list(sweep.get("shifts", [])),
                                   robustness_levels=opts.robustness_levels or list(sweep.get("levels", [])))
    if opts.robustness is None and (opts.robustness_levels or opts.site_data):
        raise MaiAugError("--robustness-levels and --site-data need --robustness (or a preset with a robustness sweep)")
    return opts


def _check_runs(opts: CompareOptions, preset: dict[str, Any]) -> list[str]:
    """The regimes to compare (the command line's, else the preset's), each known; at least one seed."""
    regimes = opts.regimes or preset.get("regimes", ["none", "basic", "complex"])
    known = available_regimes(opts.regimes_file)
    for r in regimes:
        if r not in known:
            raise MaiAugError(f"--regimes: unknown regime {r!r} (available: {', '.join(known)})")
    repeated = sorted({r for r in regimes if regimes.count(r) > 1})
    if repeated:
        raise MaiAugError(f"--regimes: {', '.join(map(repr, repeated))} given more than once; name each regime once "
                          f"(--seeds N trains N seeds of each)")
    if opts.seeds < 1:
        raise MaiAugError("--seeds must be at least 1")
    return regimes


def _run_all(opts: CompareOptions, runs: list[tuple[str, int]], plan: dict, train_opts: dict, n_boot: int,
             ctx: distributed.DistContext) -> None:
    """Train and evaluate every planned run in order; rank 0 prints each one's test macro AUC, elapsed time and ETA."""
    started, durations = time.monotonic(), []
    for i, (regime, seed) in enumerate(runs, 1):
        run_dir = StudyLayout(opts.out).run_dir(regime, seed)
        t0 = time.monotonic()
        state = _train_and_evaluate(run_dir, _run_config(run_dir, regime, seed, train_opts, opts),
                                    plan["runs"][(regime, seed)], opts.device, n_boot, ctx.is_main, opts.tta)
        ctx.barrier()
        if not ctx.is_main:
            continue
        if state != "skipped":
            durations.append(time.monotonic() - t0)
        macro = pd.read_csv(RunLayout(run_dir).auc("test")).set_index("finding").loc["macro", "auc"]
        eta = np.mean(durations) * (len(runs) - i) if durations else 0.0
        print(f"[{i}/{len(runs)}] {regime} seed {seed}: {state}, test macro AUC {macro:.3f}; "
              f"elapsed {time.monotonic() - started:.0f}s, ETA {eta:.0f}s", file=sys.stderr, flush=True)


def plan_curves(out: Path, runs: list[tuple[str, int]], train_opts: dict, opts: CompareOptions, datalist: dict,
                fractions: list[float], split_seed: int, ctx: distributed.DistContext) -> list[TrainingSize]:
    """The learning curve's training sizes: each fraction's nested subset (seeded by ``split_seed``), its runs
    planned in its own folder as :func:`plan_runs` plans the study's (refused where stale, unless ``--retrain``),
    its stale runs moved aside and its datalist written; fraction 1 is the study's own runs.

    Every size trains the full runs' number of steps per epoch, so each run makes the same number of updates.
    """
    full = _run_config(StudyLayout(out).run_dir(*runs[0]), runs[0][0], runs[0][1], train_opts, opts)
    steps = steps_per_epoch(full, len(datalist["training"]), ctx.world_size)
    sizes = []
    for fraction in fractions:
        subset = datalist if fraction == 1.0 else nested_subset(datalist, fraction, split_seed)
        size = training_size(out, fraction, subset, datalist, train_opts, steps)
        if size.n_images < full.batch_size:
            raise MaiAugError(f"--train-fraction {fraction_label(fraction)}: {size.n_images} training images, "
                              f"fewer than the batch size {full.batch_size}; use a larger fraction")
        if fraction != 1.0:
            size.plan = plan_runs(size.folder, runs, size.train_opts, dataclasses.replace(opts, out=size.folder),
                                  subset)
        sizes.append(size)
    ctx.barrier()
    if ctx.is_main:
        for size in sizes:
            if size.plan is not None:
                _settle_out(size.folder, size.plan, size.datalist)
            if not opts.quiet:
                print(f"--train-fraction {fraction_label(size.fraction)}: {size.n_patients} training patients, "
                      f"{size.n_images} images, {steps} steps per epoch", file=sys.stderr)
            if size.no_positives:
                print(f"warning: --train-fraction {fraction_label(size.fraction)} has no training positives for "
                      f"{', '.join(size.no_positives)}", file=sys.stderr)
    ctx.barrier()
    return sizes


def curve_runs(sizes: list[TrainingSize], runs: list[tuple[str, int]], opts: CompareOptions, n_boot: int,
               ctx: distributed.DistContext) -> None:
    """Train (unless finished) and evaluate on the test split every run of each training size below 1."""
    for size in sizes:
        if size.plan is None:
            continue
        sub_opts = dataclasses.replace(opts, out=size.folder)
        for regime, seed in runs:
            run_dir = StudyLayout(size.folder).run_dir(regime, seed)
            config = _run_config(run_dir, regime, seed, size.train_opts, sub_opts)
            state = _train_and_evaluate(run_dir, config, size.plan["runs"][(regime, seed)], opts.device, n_boot,
                                        ctx.is_main)
            ctx.barrier()
            if ctx.is_main:
                print(f"fraction {fraction_label(size.fraction)} ({size.n_patients} patients): {regime} seed {seed}: "
                      f"{state}", file=sys.stderr, flush=True)


def _require_boxes(datalist: dict, data: Path | None) -> None:
    """``--saliency`` needs the data's ``BBox_List_2017.csv`` (the phantom writes one)."""
    if find_box_file([it["image"] for it in datalist["test"]], data) is None:
        raise MaiAugError("--saliency: the data has no BBox_List_2017.csv beside its images (NIH's box list)")


def _saliency_section(out: Path, regimes: list[str], opts: CompareOptions, n_boot: int, names: list[str]
                      ) -> tuple[list[str], list[Evidence]]:
    """Each run's pointing game (unless current), then ``saliency.csv``, report.md's section and the evidence."""
    sweep_saliency(out, regimes, opts.seeds, opts.device, n_boot, opts.saliency_tolerance, opts.saliency_max_images)
    return saliency_section(out, regimes, opts.seeds, names, n_boot)


def _study_datalist(opts: CompareOptions, preset: dict[str, Any], ctx: distributed.DistContext) -> tuple[dict, str]:
    """The comparison's patient split of ``--data`` (or of the cached phantom) and a line naming its source."""
    data_opts = dict(preset.get("data", {}))
    if opts.data is None:
        spec, cache_dir = preset.get("phantom", {}), opts.cache_dir or default_cache_dir()
        if ctx.is_main:
            ensure_phantom(spec, cache_dir, opts.quiet)
        ctx.barrier()  # other ranks wait for rank 0 to write it
        data_dir = phantom_folder(spec, cache_dir)
        source = f"synthetic phantom ({data_dir})"
    else:
        data_dir = Path(opts.data)  # a phantom written by `mai-aug phantom` keeps its record: say it is synthetic
        source = f"synthetic phantom ({data_dir})" if (data_dir / PHANTOM_RECORD).is_file() else str(opts.data)
    images = data_opts.pop("images", None)
    reader = DataSource(data=data_dir, images=(data_dir / images) if images else None,
                        **(opts.data_options if opts.data is not None else {}))
    datalist = split_data(data_dir, report=lambda line: print(line, file=sys.stderr), source=reader, **data_opts)
    _claim_out(Path(opts.out), ctx)  # once the data has been read: a refused split creates nothing
    datalist = check_images_if_asked(datalist, opts, lambda line: print(line, file=sys.stderr),
                                     StudyLayout(opts.out).bad_images, progress=not opts.quiet)
    return datalist, source


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
    lookup_network(network, None, where="--network")
    if canonical_name(network) != canonical_name(preset_train.get("network", "densenet121")) \
            and train_opts.pop("network_args", None):
        print(f"note: --network {network} replaces the preset's network; its network_args are not used",
              file=sys.stderr)


def _run_config(run_dir: Path, regime: str, seed: int, train_opts: dict, opts: CompareOptions) -> TrainConfig:
    """The TrainConfig of one run of the comparison (``resume`` where the folder holds a started run)."""
    study = StudyLayout(opts.out)
    return build_train_config([*_train_layers(train_opts, opts), ("compare", {
        "out": str(run_dir), "regime": regime, "seed": seed,
        "datalist": str(study.datalist), "regimes_file": [str(p) for p in opts.regimes_file],
        "device": opts.device, "resume": RunLayout(run_dir).config.is_file(),
        "tensorboard_dir": str(study.run_tensorboard(regime, seed)), "hparams": True,
        "cache_dir": str(study.cache), "progress": not opts.quiet,
    })])


def _train_layers(train_opts: dict, opts: CompareOptions) -> list[tuple[str, dict]]:
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
    loaded: dict[str, Any] = {}
    statuses, problems = {}, {}
    device = resolve_device(opts.device)
    for regime, seed in runs:
        run_dir = StudyLayout(out).run_dir(regime, seed)
        config = _run_config(run_dir, regime, seed, train_opts, opts)
        if regime not in loaded:
            loaded[regime] = load_regime(regime, config.image_size, config.regimes_file)
        expected = components(config, loaded[regime].spec, datalist,
                              resolved_settings(config, loaded[regime], device))
        status, diffs = run_status(run_dir, expected)
        statuses[(regime, seed)] = status
        if diffs:
            problems[StudyLayout.label(regime, seed)] = diffs
    old_list = StudyLayout(out).datalist
    new_hash = canonical_sha256(datalist)
    replaced = old_list.is_file() and canonical_sha256(load_datalist(old_list)) != new_hash
    write = replaced or not old_list.is_file()
    if write:  # runs outside this command's plan must not end up beside a datalist they were not made from
        problems.update({label: ["made from another datalist"] for label in _orphans(out, statuses, new_hash)})
    if problems and not opts.retrain:
        raise MaiAugError(_refusal(out, problems, replaced))
    return {"runs": statuses, "stale": [out / label for label in problems], "write_datalist": write}


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
    lead = f"--out {out}: {StudyLayout(out).datalist} holds another split (other --data or split settings); " if replaced else f"--out {out}: "
    return (f"{lead}existing runs differ from this command's: {listed}; use a new --out, or pass --retrain to "
            f"retrain the mismatching runs")


def _settle_out(out: Path, plan: dict, datalist: dict) -> None:
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
        print(f"--retrain: moved {len(plan['stale'])} replaced run(s) to {aside}", file=sys.stderr)
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
                              f"({'; '.join(diffs)}); pass --retrain to retrain them alike")
    resolved = configs[first_label].get("resolved", {})
    return {"train": first, "regime_specs": {c["regime"]: c.get("resolved", {}).get("regime") for c in configs.values()},
            "device": resolved.get("device"), "split_sizes": resolved.get("split_sizes"),
            "versions": resolved.get("versions")}


def _train_and_evaluate(run_dir: Path, config: TrainConfig, status: str, device: str, n_boot: int,
                        main: bool = True, tta: int = 0) -> str:
    """Train (or resume) one run unless finished, then evaluate it on the test split (with ``tta`` draws of
    test-time augmentation where not 0); returns what happened."""
    finished = status == "finished"
    # reused only where eval/test_meta.json says they came from best.pt as it is now (not `evaluate --checkpoint last`)
    if finished and evaluated_with(run_dir, "test", RunLayout(run_dir).best, tta):
        return "skipped"
    if not finished:
        train(config)
    if main:
        evaluate_run(run_dir, "test", "best", device, n_boot=n_boot, tta=tta)
    return "evaluated" if finished else "resumed" if config.resume else "trained"
