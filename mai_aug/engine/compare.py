"""``mai-aug compare``: train and evaluate every regime on one patient split, then report which differences are real."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mai_aug.data.phantom import PhantomSpec, default_workers, write_phantom
from mai_aug.data.prepare import split_data
from mai_aug.data.split import split_table, write_datalist
from mai_aug.engine import distributed
from mai_aug.engine.config import TrainConfig
from mai_aug.engine.evaluate import evaluate_run
from mai_aug.engine.runtime import resolve_device
from mai_aug.engine.train import train
from mai_aug.errors import MaiAugError
from mai_aug.reports.study import write_report
from mai_aug.transforms.regimes import available_regimes
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
    unknown = set(preset) - {"description", "phantom", "data", "regimes", "train", "bootstrap"}
    if unknown:
        raise MaiAugError(f"--preset {name}: unknown key(s) {', '.join(sorted(unknown))}")
    return preset


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


def default_cache_dir() -> Path:
    return Path(os.environ.get("MAI_AUG_CACHE", Path.home() / ".cache" / "mai_aug"))


def phantom_folder(spec: dict[str, Any], cache_dir: Path) -> Path:
    """Where the phantom of ``spec`` lives in the cache: one folder per distinct spec."""
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir / "phantom" / f"n{spec.get('n', 3000)}-{spec.get('size', 256)}px-{key}"


def ensure_phantom(spec: dict[str, Any], cache_dir: Path, quiet: bool = False) -> Path:
    """Generate the phantom once per spec into the cache folder, or reuse it."""
    folder = phantom_folder(spec, cache_dir)
    if (folder / "COMPLETE").is_file():
        return folder
    print(f"generating the phantom dataset into {folder} (once)", file=sys.stderr)
    phantom = PhantomSpec(out=folder, **spec)
    write_phantom(phantom, workers=default_workers(), progress=None if quiet else Progress("phantom", phantom.n))
    (folder / "COMPLETE").write_text(json.dumps(spec) + "\n")
    return folder


def run_compare(opts: CompareOptions) -> pd.DataFrame | None:
    """Train and evaluate each regime x seed into ``OUT/<regime>/seed-<k>`` and write the comparison report.

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
    data_opts = dict(preset.get("data", {}))
    if opts.data is None:
        spec, cache_dir = preset.get("phantom", {}), opts.cache_dir or default_cache_dir()
        if main:
            ensure_phantom(spec, cache_dir, opts.quiet)
        ctx.barrier()  # other ranks wait for rank 0 to write it
        data_dir = phantom_folder(spec, cache_dir)
        source = f"synthetic phantom ({data_dir})"
    else:
        data_dir, source = Path(opts.data), str(opts.data)
    images = data_opts.pop("images", None)
    unknown = set(data_opts) - {"split", "val_frac", "test_frac", "seed"}
    if unknown:
        raise MaiAugError(f"--preset {opts.preset}: unknown data key(s) {', '.join(sorted(unknown))}")
    datalist = split_data(data_dir, images=(data_dir / images) if images else None,
                          report=lambda line: print(line, file=sys.stderr), **data_opts)
    datalist_path = out / "datalist.json"
    if main:
        write_datalist(datalist, datalist_path)
    ctx.barrier()
    sizes = split_table(datalist)
    if main and not opts.quiet:
        print(sizes.to_string(), file=sys.stderr)
    no_test_positives = [n for n in datalist["labels"] if sizes.loc[n, "test"] == 0]
    if main and no_test_positives:
        print(f"warning: no test positives for {', '.join(no_test_positives)}: their AUC is undefined", file=sys.stderr)

    train_opts = {**preset.get("train", {}), **{k: v for k, v in opts.train_overrides.items() if v is not None}}
    runs = [(r, k) for r in regimes for k in range(opts.seeds)]
    n_boot = opts.bootstrap or int(preset.get("bootstrap", 1000))
    started, durations = time.monotonic(), []
    for i, (regime, seed) in enumerate(runs, 1):
        run_dir = out / regime / f"seed-{seed}"
        t0 = time.monotonic()
        state = _train_and_evaluate(run_dir, regime, seed, datalist_path, train_opts, opts, out, n_boot, main)
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
    summary = write_report(out, regimes, opts.seeds, datalist, n_boot, {
        "preset": opts.preset, "preset_values": preset, "data": source, "regimes": regimes, "seeds": opts.seeds,
        "train": train_opts, "regimes_file": [str(p) for p in opts.regimes_file], "device": opts.device,
    })
    return summary


def _train_and_evaluate(run_dir: Path, regime: str, seed: int, datalist: Path, train_opts: dict, opts: CompareOptions,
                        out: Path, n_boot: int, main: bool = True) -> str:
    if (run_dir / "DONE").is_file() and (run_dir / "eval" / "test_predictions.csv").is_file():
        return "skipped"
    resume = (run_dir / "config.yaml").is_file()
    config = TrainConfig.from_dict({
        **copy.deepcopy(train_opts), "out": str(run_dir), "regime": regime, "seed": seed, "datalist": str(datalist),
        "regimes_file": [str(p) for p in opts.regimes_file], "device": opts.device, "resume": resume,
        "tensorboard_dir": str(out / "tensorboard" / f"{regime}-seed{seed}"), "hparams": True,
        "cache_dir": str(out / "cache"), "progress": not opts.quiet,
    })
    if not (run_dir / "DONE").is_file():
        train(config)
    if main:
        evaluate_run(run_dir, "test", "best", opts.device, n_boot=n_boot)
    return "resumed" if resume else "trained"
