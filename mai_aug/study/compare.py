"""``mai-aug compare``: train and evaluate every regime on one patient split, then report which differences are real."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

import mai_aug.data.phantom as phantom_module
from mai_aug.data.boxes import find_box_file
from mai_aug.data.datasets import DataSource
from mai_aug.data.images import check_images_if_asked
from mai_aug.data.phantom import PhantomSpec, default_workers, write_phantom
from mai_aug.data.prepare import split_data
from mai_aug.data.split import load_datalist, split_table, write_datalist
from mai_aug.engine import distributed
from mai_aug.engine.checkpoint import BEST_NAME
from mai_aug.engine.config import TrainConfig, read_config
from mai_aug.engine.evaluate import evaluate_run, evaluated_with
from mai_aug.engine.fingerprint import (
    NOT_RESULTS,
    canonical_sha256,
    components,
    read_fingerprint,
    resolved_settings,
    run_status,
)
from mai_aug.engine.network_spec import canonical_name, lookup_network
from mai_aug.engine.preflight import require_writable_folder
from mai_aug.engine.robustness import robustness_run, site_items, swept_with
from mai_aug.engine.runtime import RunLock, resolve_device
from mai_aug.engine.shift_levels import SHIFT_TYPES, parse_levels
from mai_aug.engine.train import train
from mai_aug.errors import MaiAugError
from mai_aug.reports.robustness import load_sweeps, sweep_statistics, write_sweep_report
from mai_aug.reports.tta import tta_section
from mai_aug.stats.scores import resolve_metrics
from mai_aug.study.presets import check_preset
from mai_aug.study.report import write_report
from mai_aug.study.saliency import saliency_section, sweep_saliency
from mai_aug.transforms.regimes import available_regimes, load_regime
from mai_aug.utils import Progress

PRESETS = ("demo", "article", "full")


def preset_path(name: str) -> Path:
    """A shipped preset by name, or a YAML file."""
    if name in PRESETS:
        return Path(str(resources.files("mai_aug") / "configs" / "presets" / f"{name}.yaml"))
    path = Path(name)
    if not path.is_file():
        raise MaiAugError(f"--preset {name!r}: not one of {', '.join(PRESETS)} nor a YAML file")
    return path


def load_preset(name: str) -> dict[str, Any]:
    try:
        preset = yaml.safe_load(preset_path(name).read_text()) or {}
    except yaml.YAMLError as e:
        raise MaiAugError(f"--preset {name}: not valid YAML ({e})") from None
    return check_preset(preset, name)


@dataclass
class CompareOptions:
    """What the command line asked for; ``None`` leaves the preset's value."""

    out: Path
    data: Path | None = None
    preset: str = "demo"
    regimes: list[str] | None = None
    seeds: int = 1
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


def default_cache_dir() -> Path:
    return Path(os.environ.get("MAI_AUG_CACHE", Path.home() / ".cache" / "mai_aug"))


def phantom_folder(spec: dict[str, Any], cache_dir: Path) -> Path:
    """Where the phantom of ``spec`` lives in the cache: one folder per distinct spec and phantom code.

    The code is part of the key, so a changed phantom generator never serves images drawn by the old one.
    """
    code = Path(phantom_module.__file__).read_bytes()
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode() + code).hexdigest()[:10]
    return cache_dir / "phantom" / f"n{spec.get('n', 3000)}-{spec.get('size', 256)}px-{key}"


def ensure_phantom(spec: dict[str, Any], cache_dir: Path, quiet: bool = False) -> Path:
    """Generate the phantom once per spec into the cache folder, or reuse it."""
    folder = phantom_folder(spec, cache_dir)
    if (folder / "COMPLETE").is_file():
        return folder
    print(f"generating the phantom dataset into {folder} (once)", file=sys.stderr)
    phantom = PhantomSpec(out=folder, **spec)
    write_phantom(phantom, workers=default_workers(), progress=None if quiet else Progress("phantom", phantom.n),
                  overwrite=True)  # the cache's own folder: an interrupted generation is redone
    (folder / "COMPLETE").write_text(json.dumps(spec) + "\n")
    return folder


def run_compare(opts: CompareOptions) -> pd.DataFrame | None:
    """Train and evaluate each regime x seed into ``OUT/<regime>/seed-<k>`` and write the comparison report.

    Existing run folders are reused only where their fingerprint matches this command's (see :func:`plan_runs`).
    Under torchrun every rank trains (DDP); rank 0 alone generates data, evaluates and reports (others get None).
    """
    ctx = distributed.init(resolve_device(opts.device).type)
    main = ctx.is_main
    preset = load_preset(opts.preset)
    regimes = opts.regimes or preset.get("regimes", ["none", "basic", "complex"])
    known = available_regimes(opts.regimes_file)
    for r in regimes:
        if r not in known:
            raise MaiAugError(f"--regimes: unknown regime {r!r} (available: {', '.join(known)})")
    if opts.seeds < 1:
        raise MaiAugError("--seeds must be at least 1")
    out = Path(opts.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"--out {out}: cannot create ({e.strerror})") from None
    if main:
        require_writable_folder(out, "--out")  # before the phantom is generated and the runs train
    # an unknown metric (the command line's or the preset's) stops before the phantom is made and the runs train
    metrics = [m.name for m in resolve_metrics(opts.train_overrides.get("metrics")
                                               or preset.get("train", {}).get("metrics"))]
    datalist, source = _study_datalist(opts, preset, ctx)
    if opts.robustness is not None:  # bad levels or site data are refused before anything trains
        parse_levels(opts.robustness_levels, opts.robustness or list(SHIFT_TYPES), "--robustness-levels")
        if opts.site_data is not None:
            site_items(datalist["test"], Path(opts.site_data))
    if opts.saliency:  # no box list: refused before anything trains
        _require_boxes(datalist, opts.data)
    train_opts = {**preset.get("train", {}), **{k: v for k, v in opts.train_overrides.items() if v is not None}}
    _override_network(train_opts, preset.get("train", {}), opts.train_overrides.get("network"))
    runs = [(r, k) for r in regimes for k in range(opts.seeds)]
    plan = plan_runs(out, runs, train_opts, opts, datalist)  # every rank reads the same folders, refuses alike
    ctx.barrier()
    if main:
        _settle_out(out, plan, datalist)
    ctx.barrier()
    _report_split(datalist, main and not opts.quiet, main)

    n_boot = opts.bootstrap or int(preset.get("bootstrap", 1000))
    started, durations = time.monotonic(), []
    for i, (regime, seed) in enumerate(runs, 1):
        run_dir = out / regime / f"seed-{seed}"
        t0 = time.monotonic()
        state = _train_and_evaluate(run_dir, _run_config(run_dir, regime, seed, train_opts, opts),
                                    plan["runs"][(regime, seed)], opts.device, n_boot, main, opts.tta)
        ctx.barrier()
        if not main:
            continue
        if state != "skipped":
            durations.append(time.monotonic() - t0)
        macro = pd.read_csv(run_dir / "eval" / "test_auc.csv").set_index("finding").loc["macro", "auc"]
        eta = np.mean(durations) * (len(runs) - i) if durations else 0.0
        print(f"[{i}/{len(runs)}] {regime} seed {seed}: {state}, test macro AUC {macro:.3f}; "
              f"elapsed {time.monotonic() - started:.0f}s, ETA {eta:.0f}s", file=sys.stderr, flush=True)

    if not main:
        return None
    config = {"preset": opts.preset, "preset_values": {k: v for k, v in preset.items() if k != "train"},
              "data": source, "regimes": regimes, "seeds": opts.seeds, "bootstrap": n_boot, "metrics": metrics,
              **runs_configuration(out, runs), **({"tta": opts.tta} if opts.tta else {})}
    if opts.robustness is not None:
        config["robustness"] = {"levels": parse_levels(opts.robustness_levels, opts.robustness or list(SHIFT_TYPES)),
                                "site_data": str(opts.site_data) if opts.site_data is not None else None}
    sections = [] if opts.robustness is None else sweep_runs(out, regimes, opts, n_boot, datalist["labels"])
    if opts.saliency:
        sections = [*sections, *_saliency_section(out, regimes, opts, n_boot, list(datalist["labels"]))]
        config["saliency"] = {"tolerance_px": opts.saliency_tolerance, "max_images": opts.saliency_max_images}
    if opts.tta:
        sections = [*tta_section(out, regimes, opts.seeds, list(datalist["labels"]), n_boot, opts.tta), *sections]
    return write_report(out, regimes, opts.seeds, datalist, n_boot, config, metrics, sections)


def sweep_runs(out: Path, regimes: list[str], opts: CompareOptions, n_boot: int, names: list[str]) -> list[str]:
    """``mai-aug robustness`` of every run (unless its sweep is current), then the paired statistics per shift level:
    ``robustness.csv``, ``robustness_area.csv``, ``robustness_<shift>.png``; returns report.md's section."""
    shifts = opts.robustness or list(SHIFT_TYPES)
    levels = parse_levels(opts.robustness_levels, shifts)
    for regime in regimes:
        for seed in range(opts.seeds):
            run_dir = out / regime / f"seed-{seed}"
            if not swept_with(run_dir, run_dir / "checkpoints" / BEST_NAME, levels, n_boot, opts.site_data):
                print(f"robustness sweep of {regime} seed {seed}", file=sys.stderr, flush=True)
                robustness_run(run_dir, shifts, opts.robustness_levels, "test", "best", opts.device, n_boot=n_boot,
                               site_data=opts.site_data)
    baseline = "none" if "none" in regimes else regimes[0]
    labels, patients, sweeps = load_sweeps(out, regimes, opts.seeds, list(names))
    curve, area = sweep_statistics(labels, patients, sweeps, list(names), n_boot, baseline)
    return write_sweep_report(out, curve, area, baseline, opts.seeds, n_boot)


def _require_boxes(datalist: dict, data: Path | None) -> None:
    """``--saliency`` needs the data's ``BBox_List_2017.csv`` (the phantom writes one)."""
    if find_box_file([it["image"] for it in datalist["test"]], data) is None:
        raise MaiAugError("--saliency: the data has no BBox_List_2017.csv beside its images (NIH's box list)")


def _saliency_section(out: Path, regimes: list[str], opts: CompareOptions, n_boot: int, names: list[str]
                      ) -> list[str]:
    """Each run's pointing game (unless current), then ``saliency.csv`` and report.md's section."""
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
        data_dir, source = Path(opts.data), str(opts.data)
    images = data_opts.pop("images", None)
    if opts.data is None and any(v not in (None, "auto", "|", []) for v in opts.data_options.values()):
        raise MaiAugError("--csv, --dataset and their options need --data (the phantom is in NIH's layout)")
    unknown = set(data_opts) - {"split", "val_frac", "test_frac", "seed"}
    if unknown:
        raise MaiAugError(f"--preset {opts.preset}: unknown data key(s) {', '.join(sorted(unknown))}")
    reader = DataSource(data=data_dir, images=(data_dir / images) if images else None,
                        **(opts.data_options if opts.data is not None else {}))
    datalist = split_data(data_dir, report=lambda line: print(line, file=sys.stderr), source=reader, **data_opts)
    datalist = check_images_if_asked(datalist, opts, lambda line: print(line, file=sys.stderr),
                                     Path(opts.out) / "bad_images.csv", progress=not opts.quiet)
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
    out = Path(opts.out)
    return TrainConfig.from_dict({
        **copy.deepcopy(train_opts), "out": str(run_dir), "regime": regime, "seed": seed,
        "datalist": str(out / "datalist.json"), "regimes_file": [str(p) for p in opts.regimes_file],
        "device": opts.device, "resume": (run_dir / "config.yaml").is_file(),
        "tensorboard_dir": str(out / "tensorboard" / f"{regime}-seed{seed}"), "hparams": True,
        "cache_dir": str(out / "cache"), "progress": not opts.quiet,
    })


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
        run_dir = out / regime / f"seed-{seed}"
        config = _run_config(run_dir, regime, seed, train_opts, opts)
        if regime not in loaded:
            loaded[regime] = load_regime(regime, config.image_size, config.regimes_file)
        expected = components(config, loaded[regime].spec, datalist,
                              resolved_settings(config, loaded[regime], device))
        status, diffs = run_status(run_dir, expected)
        statuses[(regime, seed)] = status
        if diffs:
            problems[f"{regime}/seed-{seed}"] = diffs
    old_list = out / "datalist.json"
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
    for run_dir in sorted(out.glob("*/seed-*")):
        seed = run_dir.name.removeprefix("seed-")
        if not seed.isdigit() or (run_dir.parent.name, int(seed)) in planned:
            continue
        stored = read_fingerprint(run_dir)
        if stored is None and not (run_dir / "config.yaml").is_file():
            continue  # nothing was trained there
        if stored is None or stored.get("datalist_sha256") != datalist_hash:
            labels.append(f"{run_dir.parent.name}/{run_dir.name}")
    return labels


def _refusal(out: Path, problems: dict[str, list[str]], replaced: bool) -> str:
    """One line: the runs grouped by what differs, and how to proceed."""
    groups: dict[str, list[str]] = {}
    for label, diffs in problems.items():
        groups.setdefault("; ".join(diffs), []).append(label)
    listed = " | ".join(f"{', '.join(labels)}: {diffs}" for diffs, labels in groups.items())
    lead = f"--out {out}: {out / 'datalist.json'} holds another split (other --data or split settings); " if replaced else f"--out {out}: "
    return (f"{lead}existing runs differ from this command's: {listed}; use a new --out, or pass --retrain to "
            f"retrain the mismatching runs")


def _settle_out(out: Path, plan: dict, datalist: dict) -> None:
    """Move stale run folders (with their TensorBoard logs and the datalist they came from) aside; write the datalist.

    Each folder's ``.lock`` is taken first, all of them before anything moves: a run that a ``train`` is writing
    is refused with the holder's pid rather than pulled out from under it.
    """
    if plan["stale"]:
        # Moved, not deleted: a mistaken --retrain must not destroy hours of training.
        aside = _unique(out / "replaced" / time.strftime("%Y%m%d-%H%M%S"))
        with contextlib.ExitStack() as locks:
            for run_dir in plan["stale"]:
                if run_dir.is_dir():
                    locks.enter_context(RunLock(run_dir / ".lock"))
            _move_aside(out, plan, aside)
        print(f"--retrain: moved {len(plan['stale'])} replaced run(s) to {aside}", file=sys.stderr)
    if plan["write_datalist"]:
        write_datalist(datalist, out / "datalist.json")


def _move_aside(out: Path, plan: dict, aside: Path) -> None:
    """Move the stale runs, their TensorBoard logs and (if replaced) the datalist into ``aside``."""
    for run_dir in plan["stale"]:
        regime, seed = run_dir.parent.name, run_dir.name.removeprefix("seed-")
        _move(run_dir, aside / regime / run_dir.name)
        _move(out / "tensorboard" / f"{regime}-seed{seed}", aside / "tensorboard" / f"{regime}-seed{seed}")
    if plan["write_datalist"]:
        _move(out / "datalist.json", aside / "datalist.json")


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
    configs = {f"{r}/seed-{k}": read_config(out / r / f"seed-{k}") for r, k in runs}
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
    if finished and evaluated_with(run_dir, "test", run_dir / "checkpoints" / BEST_NAME, tta):
        return "skipped"
    if not finished:
        train(config)
    if main:
        evaluate_run(run_dir, "test", "best", device, n_boot=n_boot, tta=tta)
    return "evaluated" if finished else "resumed" if config.resume else "trained"
