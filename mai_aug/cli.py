"""The ``mai-aug`` command line: all argument parsing lives here; the work is done by the library modules.

``mai-aug NAME ...``, ``python workflows/NAME.py ...`` and ``torchrun ... workflows/NAME.py ...`` run the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mai_aug.core.choices import DATASETS, DEFAULT_BOOTSTRAP, EXTERNAL_SPLITS, UNCERTAIN_POLICIES
from mai_aug.core.errors import MaiAugError, show_settings_as, shown, wrapped_message
from mai_aug.core.interrupts import exit_status, interrupted_message, raise_on_signals
from mai_aug.settings.flags import add_compare_train_flags, add_setting_flags, add_train_flags, integer, setting_type
from mai_aug.settings.schema import BY_NAME, COMPARE_TRAIN_FLAGS, DATA_OPTIONS

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}

DESCRIPTION = """\
Does data augmentation help a chest X-ray classifier? mai-aug trains MONAI
classifiers on NIH ChestX-ray14 (or CheXpert, or any CSV) under augmentation
regimes and compares them per finding: AUC with patient-bootstrap intervals and
paired differences against no augmentation.

Start with `mai-aug compare --out runs/demo`: without --data it runs the whole
study on a synthetic chest phantom and writes report.md into runs/demo.
`mai-aug COMMAND --help` lists a command's options and their defaults.
Read more in README.md and docs/ of the source tree."""


def command(name: str) -> Callable:
    """Register a function that adds the sub-parser for ``name``."""

    def register(fn: Callable[[argparse._SubParsersAction], None]) -> Callable:
        COMMANDS[name] = fn
        return fn

    return register


def _positive_int(text: str) -> int:
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _bootstrap(text: str) -> int:
    """Bootstrap resamples: at least ``MIN_BOOTSTRAP`` (with one, every interval is a point and every difference a star)."""
    from mai_aug.stats.auc import MIN_BOOTSTRAP  # here: the CLI imports nothing heavy before a command runs

    value = integer(text)
    if value < MIN_BOOTSTRAP:
        raise argparse.ArgumentTypeError(f"{text} is below {MIN_BOOTSTRAP} (too few resamples for an interval)")
    return _within_limit(value, "bootstrap")


def _capped(parse: Callable[[str], Any], key: str) -> Callable[[str], Any]:
    """``parse``, then refuse a value above the limit of count ``key`` (mai_aug/core/limits.py)."""

    def parse_capped(text: str) -> Any:
        return _within_limit(parse(text), key)

    parse_capped.__name__ = parse.__name__
    return parse_capped


def _within_limit(value: Any, key: str) -> Any:
    from mai_aug.core.limits import limit_problem  # plain Python: no torch before a command runs

    problem = limit_problem(key, value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_float(text: str) -> float:
    """A finite number above 0 (learning rates, difficulties): ``nan``, ``inf`` and ``0`` are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite positive number")
    return value


def _detect(text: str) -> float:
    """An AUC difference in (0, 1) for ``--detect``."""
    from mai_aug.settings.presets import check_detect  # plain Python: no torch before a command runs

    try:
        return check_detect(float(text), "--detect")
    except (ValueError, MaiAugError) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: a number above 0 and below 1") from e


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends an option's line with its default, unless the line names it already or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        none = default is None or default is False or default is argparse.SUPPRESS or default == []
        if none or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _main_rank_only(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that rank 0 alone runs under torchrun (the others return 0 at once): one run's analyses."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from mai_aug.engine import distributed

        return handler(args) if distributed.current().is_main else 0

    return run


def _add_loader_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_capped(_non_negative_int, "workers"), default=0, help="data-loader workers")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``mai-aug CMD: error: ...``), exit status 2, no usage block.

    Every command's ``--help`` shows the defaults (:class:`DefaultsFormatter`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {shown(message, flag_naming(self))} (see --help)\n")


_seed = setting_type("seed")
_image_size = setting_type("image_size")
#: How ``--data`` is read (``split``, ``preview``): its folder, CSV, images, views and the adapters' options.
READ_SETTINGS = ("data", "csv", "images", "views", *(name for name in DATA_OPTIONS if name != "csv"))
#: How ``split`` splits, and its image checks.
SPLIT_SETTINGS = ("split", "val_frac", "test_frac", "require_all_images")
IMAGE_CHECKS = ("verify_images", "skip_bad_images")


@command("split")
def _split_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="split an NIH-layout dataset by patient into a MONAI datalist")
    add_setting_flags(p, (*READ_SETTINGS, *SPLIT_SETTINGS, *IMAGE_CHECKS), required={"data"})
    p.add_argument("--seed", type=_seed, default=0, help="seed of the patient split")
    p.add_argument("--out", type=Path, required=True, help="datalist JSON to write")
    p.set_defaults(handler=_run_split)


def _run_split(args: argparse.Namespace) -> int:
    from mai_aug.data.prepare import SplitRequest, write_split

    write_split(SplitRequest.from_settings(vars(args)), out=args.out, verify=args.verify_images,
                skip=args.skip_bad_images)
    return 0


@command("prepare")
def _prepare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="decode every image of a dataset once into the shared image store")
    add_setting_flags(p, (*READ_SETTINGS, "datalist", "image_size", "cache_dir"))
    p.add_argument("--regime", default="none", help="regime whose load part is stored (every shipped regime shares "
                   "one; default: %(default)s)")
    p.add_argument("--regimes-file", action="append", default=[], type=Path,
                   help="YAML adding or overriding regimes (repeatable)")
    _add_trust_arg(p)
    p.add_argument("--workers", type=_capped(_non_negative_int, "workers"), default=0,
                   help="decoding processes (0: one per core)")
    p.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from mai_aug.data.prepare import SplitRequest, datalist_for, every_image
    from mai_aug.data.store import store_root
    from mai_aug.data.store_build import ensure_store
    from mai_aug.transforms.regimes import load_regime

    if (args.data is None) == (args.datalist is None):
        raise MaiAugError("give --data DIR or --datalist JSON (the images to store)")
    with _trust_context(args):
        regime = load_regime(args.regime, args.image_size, args.regimes_file)
    paths = every_image(datalist_for(SplitRequest.from_settings(_with_split_defaults(args))))
    store = ensure_store(paths, regime, store_root(args.cache_dir), workers=args.workers)
    size = store.images_file.stat().st_size / 2**20
    print(f"image store {store.folder}: {len(store.paths)} images of {store.shape} uint8 ({size:.1f} MiB)")
    return 0


def _with_split_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """``args``' settings with those of the split ``prepare`` has no flags for: every image is stored, whatever the
    split."""
    defaults = {name: BY_NAME[name].default_value() for name in ("split", "val_frac", "test_frac", "split_seed",
                                                               "require_all_images", "seed")}
    return {**defaults, **vars(args)}


@command("phantom")
def _phantom_parser(sub: argparse._SubParsersAction) -> None:
    from mai_aug.core.choices import PHANTOM_LAYOUTS  # plain data: no torch before a command runs

    p = sub.add_parser("phantom", help="write the synthetic chest X-ray phantom in NIH's (or CheXpert's) layout")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--n", type=_capped(_positive_int, "n"), default=3000, help="number of images")
    p.add_argument("--size", type=_capped(_positive_int, "size"), default=256, help="image size in pixels")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the images, labels and patients")
    p.add_argument("--images-per-patient", type=_capped(_positive_float, "images_per_patient"), default=3.0, help="mean images per patient")
    p.add_argument("--difficulty", type=_positive_float, default=1.0, help="higher makes findings subtler")
    p.add_argument("--test-shift", default="none", choices=["none", "site"],
                   help="site: test patients are imaged with wider positioning and exposure ranges "
                        "(--layout chexpert: every image, the whole dataset is another site)")
    p.add_argument("--layout", default=PHANTOM_LAYOUTS[0], choices=PHANTOM_LAYOUTS,
                   help="nih: NIH ChestX-ray14's files; chexpert: CheXpert-v1.0's train.csv/valid.csv "
                        "(valid.csv the test patients, CheXpert's observations mapped from the planted findings)")
    p.add_argument("--workers", type=_capped(_non_negative_int, "workers"), default=0, help="processes (0: one per core)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (replaces its dataset)")
    p.set_defaults(handler=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    from mai_aug.core.progress import Progress
    from mai_aug.data.phantom import PhantomSpec, default_workers, write_phantom

    spec = PhantomSpec(out=args.out, n=args.n, size=args.size, seed=args.seed,
                       images_per_patient=args.images_per_patient, difficulty=args.difficulty,
                       test_shift=args.test_shift, layout=args.layout)
    write_phantom(spec, workers=args.workers or default_workers(), progress=Progress("phantom", args.n),
                  overwrite=args.overwrite)
    print(f"wrote {args.n} phantom images in {'CheXpert' if args.layout == 'chexpert' else 'NIH'} layout to {args.out}")
    return 0


def _add_regime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--regime", required=True, help="augmentation regime (see `mai-aug regimes`)")
    p.add_argument("--regimes-file", action="append", default=[], type=Path,
                   help="YAML adding or overriding regimes (repeatable)")
    _add_trust_arg(p)


def _add_trust_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-config", action="store_true",
                   help="let regimes files and stored run regimes run code ($ expressions, any _target_); "
                        "only for files you wrote")


def _trust_context(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Regimes load under --trust-config within the command (transforms imported only when it is given)."""
    if not getattr(args, "trust_config", False):
        return contextlib.nullcontext()
    from mai_aug.core.trust import trusted_configs

    return trusted_configs(True)


@command("regimes")
def _regimes_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("regimes", help="list the augmentation regimes and their transforms")
    p.add_argument("--regimes-file", action="append", default=[], type=Path, help="YAML adding or overriding regimes")
    p.add_argument("--image-size", type=_image_size, default=BY_NAME["image_size"].default,
                   help="image size (px) the listed transforms are built for")
    _add_trust_arg(p)
    p.set_defaults(handler=_run_regimes)


def _run_regimes(args: argparse.Namespace) -> int:
    from mai_aug.transforms.regimes import available_regimes, load_regime

    for name, description in available_regimes(args.regimes_file).items():
        regime = load_regime(name, args.image_size, args.regimes_file)
        flip = " (allows left-right flips)" if regime.allow_lateral_flip else ""
        print(f"{name}{flip}: {description}")
        for line in regime.describe():
            print(f"    {line}")
    return 0


@command("preview")
def _preview_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preview", help="write augmented samples of a few images and a captioned grid")
    add_setting_flags(p, READ_SETTINGS, required={"data"})
    _add_regime_args(p)
    p.add_argument("--n", type=_capped(_positive_int, "n"), default=8, help="images to preview")
    p.add_argument("--samples", type=_capped(_positive_int, "samples"), default=4, help="augmented samples per image")
    p.add_argument("--size", type=_image_size, default=256, help="training image size")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the images picked and their augmentations")
    p.add_argument("--out", type=Path, required=True, help="folder for <stem>_<k>.png and grid.png")
    p.set_defaults(handler=_run_preview)


def _run_preview(args: argparse.Namespace) -> int:
    from mai_aug.data.datasets import DataSource
    from mai_aug.reports.preview import write_preview
    from mai_aug.transforms.regimes import load_regime

    regime = load_regime(args.regime, args.size, args.regimes_file)
    written = write_preview(args.data, regime, args.out, n=args.n, samples=args.samples, seed=args.seed,
                            csv=args.csv, images=args.images, source=DataSource.from_settings(vars(args)))
    print(f"wrote {len(written)} samples and {args.out / 'grid.png'}")
    return 0


@command("train")
def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier (DenseNet121 by default) under one regime into a run folder")
    add_train_flags(p)  # every setting's flag (mai_aug/settings/schema.py), given ones only in the arguments
    _add_trust_arg(p)
    p.add_argument("--settings", type=Path, metavar="YAML",
                   help="settings file: keys are the settings (lr, epochs, network, metrics, dataset...); flags "
                        "given on the command line override it")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from mai_aug.engine.train import train
    from mai_aug.settings.flags import settings_given
    from mai_aug.settings.layers import build_train_config, read_settings

    file = read_settings(args.settings) if args.settings else {}
    config = build_train_config([("file", file), ("cli", settings_given(args))])
    if config.data is None and config.datalist is None and not config.resume:
        raise MaiAugError("give --data DIR or --datalist JSON (or data: or datalist: in --settings)")
    if config.data is not None and config.datalist is not None:
        raise MaiAugError("give --data DIR or --datalist JSON, not both (the datalist already holds a split)")
    train(config)
    return 0


def _add_scored_split_args(p: argparse.ArgumentParser) -> None:
    """The split a run is scored on and the patient-bootstrap resamples (evaluate, robustness, saliency)."""
    p.add_argument("--split", default="test", choices=["test", "validation"], help="the datalist split scored")
    p.add_argument("--bootstrap", type=_bootstrap, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples of patients")


def _run_parser(sub: argparse._SubParsersAction, name: str, help: str,
                scored: bool = False) -> argparse.ArgumentParser:
    """The parser of a command that reads a finished run (``--run``, ``--checkpoint``...), ``scored``: on a split."""
    p = sub.add_parser(name, help=help)
    _add_run_args(p)
    if scored:
        _add_scored_split_args(p)
    return p


def _add_run_args(p: argparse.ArgumentParser) -> None:
    # --run-dir: under torchrun, whose parser takes --run for an abbreviation of its --run-path
    p.add_argument("--run", "--run-dir", dest="run", type=Path, required=True,
                   help="run folder from `mai-aug train` (--run-dir under torchrun)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint file")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    _add_trust_arg(p)


@command("evaluate")
def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = _run_parser(sub, "evaluate", "AUC with patient-bootstrap CIs, ROC figure and predictions of a run",
                    scored=True)
    p.add_argument("--metrics", nargs="+", type=setting_type("metrics"), metavar="METRIC",
                   help="per-finding metrics tabled with intervals, one eval/<split>_<metric>.csv each (default: the "
                        "run's): auc (always on), ap, ece, sens@spec (specificity 0.9) or sens@specX (e.g. sens@spec0.95)")
    p.add_argument("--tta", type=_capped(_non_negative_int, "tta"), default=0, metavar="N",
                   help="also average predictions over N draws of the regime's random part (test-time augmentation) "
                        "and write <split>_tta.csv: AUC with and without, and the paired difference (default: off)")
    add_setting_flags(p, ("threads",))
    add_setting_flags(_add_external_args(p), ("uncertain", *EXTERNAL_SOURCE))
    p.set_defaults(handler=_run_evaluate)


#: ``evaluate --external``'s data options of the external dataset (the schema's, as ``split`` and ``train`` read them).
EXTERNAL_SOURCE = ("csv", "image_column", "labels_column", "label_sep", "label_columns", "patient_column")


def _add_external_args(p: argparse.ArgumentParser, study: bool = False) -> argparse._ArgumentGroup:
    """``--external DIR`` of ``evaluate`` (a run) or ``compare`` (every run): another dataset, scored over the
    findings both share. A study's external set is in NIH's or CheXpert's layout (a CSV one: ``evaluate``)."""
    group = p.add_argument_group("external test set (--external DIR)")
    group.add_argument("--external", type=Path, metavar="DIR",
                       help=("score every run on another dataset's images (NIH or CheXpert layout) and report the "
                             "external macro AUC and the generalisation gap per regime" if study else
                             "score the run on another dataset's images (NIH or CheXpert layout, or a CSV): outputs "
                             "under RUN/external/<name>/, reused while current"))
    group.add_argument("--external-dataset", default="auto", choices=list(DATASETS[:3] if study else DATASETS),
                       help="layout of --external (default: %(default)s)")
    group.add_argument("--external-split", default="all", choices=list(EXTERNAL_SPLITS),
                       help="all its images, or its official test set (CheXpert's valid.csv, NIH's test_list.txt)")
    group.add_argument("--external-name", help="the output folder's name (default: the --external folder's name)")
    group.add_argument("--label-map", type=Path, metavar="FILE.yaml",
                       help="external finding -> the run's finding(s), as data (default: the built-in NIH <-> "
                            "CheXpert map)")
    group.add_argument("--lesion", action="store_true",
                       help="with the built-in map, also score CheXpert's Lung Lesion by an NIH run's higher of Mass "
                            "and Nodule")
    if study:  # compare's --uncertain is its --data's
        group.add_argument("--external-uncertain", choices=list(UNCERTAIN_POLICIES),
                           help="a CheXpert external set's uncertain (-1) labels (default: ones)")
    return group


def _external_wanted(args: argparse.Namespace, own: list[tuple[str, bool]], hint: str = "") -> bool:
    """Whether ``--external`` is given; without it, the first option of the external set given a value other than
    its default (the shared ones, then the command's ``own`` as (flag, given)) is refused, ending with ``hint``."""
    given = [flag for flag, on in (("--external-dataset", args.external_dataset != "auto"),
                                   ("--external-split", args.external_split != "all"),
                                   ("--external-name", args.external_name is not None),
                                   ("--label-map", args.label_map is not None), ("--lesion", args.lesion), *own) if on]
    if args.external is None and given:
        raise MaiAugError(f"{given[0]}: applies to --external DIR only{hint}")
    return args.external is not None


def _external_spec(args: argparse.Namespace) -> Any:
    """The external set ``args`` ask for, after refusing settings that do not apply to it; None without --external."""
    from mai_aug.analyses.external.data import ExternalSpec

    own = [("--uncertain", args.uncertain is not None),
           *((f"--{n.replace('_', '-')}", bool(getattr(args, n)) and getattr(args, n) != "|") for n in EXTERNAL_SOURCE)]
    if not _external_wanted(args, own):
        return None
    for flag, on in (("--split", args.split != "test"), ("--tta", args.tta), ("--metrics", args.metrics)):
        if on:
            raise MaiAugError(f"{flag}: applies to the run's own datalist, not to --external")
    source = {n: getattr(args, n) for n in EXTERNAL_SOURCE  # given ones only: evaluate and compare then agree
              if getattr(args, n) not in (None, []) and getattr(args, n) != BY_NAME[n].default_value()}
    return ExternalSpec(args.external, args.external_dataset, args.external_split, args.label_map, args.lesion,
                        args.uncertain, args.external_name, source)


def _run_evaluate_external(args: argparse.Namespace, spec: Any) -> int:
    from mai_aug.analyses.external.run import evaluate_external

    table = evaluate_external(args.run, spec, args.checkpoint, args.device, n_boot=args.bootstrap)
    matching, folder = table.attrs["matching"], table.attrs["folder"]
    print(f"external {spec.data}: {table.attrs['images']} images; findings matched ({matching.source}): "
          + ", ".join(f"{m.name} <- {' | '.join(matching.run_names[j] for j in m.run)}" for m in matching.matches))
    for side, names in (("the run's", matching.run_only), ("the external dataset's", matching.external_only)):
        if names:
            print(f"left out, no counterpart among {side} findings: {', '.join(names)}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{'reused (current)' if table.attrs['reused'] else 'wrote'} {folder}/auc.csv, roc.png, predictions.csv, "
          f"meta.json")
    return 0


@_main_rank_only
def _run_evaluate(args: argparse.Namespace) -> int:
    from mai_aug.analyses.evaluate.run import evaluate_run
    from mai_aug.core.layout import RunLayout
    from mai_aug.core.threads import use_threads

    use_threads(args.threads)
    external = _external_spec(args)
    if external is not None:
        return _run_evaluate_external(args, external)
    table = evaluate_run(args.run, args.split, args.checkpoint, args.device, n_boot=args.bootstrap,
                         metrics=args.metrics, tta=args.tta)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    run, keys = RunLayout(args.run), ["auc"]
    for name, frame in table.attrs.get("metric_tables", {}).items():
        macro = frame[frame["finding"] == "macro"].iloc[0]
        keys.append(frame.columns[1])
        print(f"{name} macro: {macro.iloc[1]:.3f} [{macro['ci_low']:.3f}, {macro['ci_high']:.3f}]")
    ece = table.attrs["calibration_ece"]
    if ece is not None:
        macro = ece[ece["finding"] == "macro"].iloc[0]
        print(f"ECE macro on {args.split}: {macro['ece_uncalibrated']:.3f} uncalibrated, "
              f"{macro['ece_calibrated']:.3f} with {run.calibration.name} (the tables and predictions above are "
              f"uncalibrated); wrote {run.calibration_ece(args.split)}")
    else:
        print(table.attrs["calibration"])
    if args.tta:
        import pandas as pd

        tta = pd.read_csv(run.tta(args.split))
        columns = [c for c in ("prediction", "auc", "ci_low", "ci_high", "diff_vs_plain", "diff_ci_low", "diff_ci_high")
                   if c in tta]
        print(tta[tta["finding"] == "macro"][columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {run.tta(args.split)}, {run.tta_predictions(args.split)}")
    print(f"wrote {', '.join(str(run.eval_file(args.split, f'{k}.csv')) for k in keys)}, {run.roc(args.split)}, "
          f"{run.predictions(args.split)}")
    return 0


@command("calibrate")
def _calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = _run_parser(sub, "calibrate", "fit per-finding calibration on a run's validation split (calibration.json)")
    p.add_argument("--method", default="platt", choices=["platt", "temperature"],
                   help="platt: a slope and an intercept per finding; temperature: one temperature per finding "
                        "(default: platt)")
    _add_loader_workers(p)
    p.set_defaults(handler=_run_calibrate)


@_main_rank_only
def _run_calibrate(args: argparse.Namespace) -> int:
    import pandas as pd

    from mai_aug.analyses.calibration.run import calibrate_run
    from mai_aug.core.layout import RunLayout

    record = calibrate_run(args.run, args.method, args.checkpoint, args.device, workers=args.workers)
    ece = record["ece_validation"]
    frame = pd.DataFrame({"finding": [*record["findings"], "macro"],
                          "slope": [*(m["slope"] for m in record["maps"].values()), None],
                          "intercept": [*(m["intercept"] for m in record["maps"].values()), None],
                          "ece_uncalibrated": list(ece["uncalibrated"].values()),
                          "ece_calibrated": list(ece["calibrated"].values())})
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"{args.method} fitted on {record['images']} validation images (ECE there is in-sample; "
          f"`mai-aug evaluate` reports it on the test split); wrote {RunLayout(args.run).calibration}")
    return 0


@command("robustness")
def _robustness_parser(sub: argparse._SubParsersAction) -> None:
    from mai_aug.transforms.shift_levels import SHIFT_TYPES  # plain data: no torch before a command runs

    p = _run_parser(sub, "robustness", "test AUC of a run under graded test-time shifts (rotation, zoom, ...)",
                    scored=True)
    p.add_argument("--shifts", nargs="+", default=list(SHIFT_TYPES), choices=list(SHIFT_TYPES),
                   help="shift types (default: all)")
    p.add_argument("--levels", nargs="+", default=[], metavar="SHIFT=V1,V2",
                   help="levels of a shift instead of its defaults; the identity level is always added ("
                        + "; ".join(f"{s.name}: {','.join(f'{v:g}' for v in s.levels)}, {s.unit}"
                                    for s in SHIFT_TYPES.values()).replace("%", "%%") + ")")
    p.add_argument("--site-data", type=Path,
                   help="a phantom made with --test-shift site (the run's phantom --seed/--n/--size): its images "
                        "of the test patients become one more shift, 'site'")
    _add_loader_workers(p)
    p.set_defaults(handler=_run_robustness)


@_main_rank_only
def _run_robustness(args: argparse.Namespace) -> int:
    from mai_aug.analyses.robustness.run import robustness_run
    from mai_aug.core.layout import RunLayout

    table = robustness_run(args.run, args.shifts, args.levels, args.split, args.checkpoint, args.device,
                           n_boot=args.bootstrap, workers=args.workers, site_data=args.site_data)
    macro = table[table["finding"] == "macro"][["shift", "level", "auc", "ci_low", "ci_high"]]
    print(macro.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {RunLayout(args.run).robustness_dir}/table.csv, <shift>.png, predictions.npz")
    return 0


@command("saliency")
def _saliency_parser(sub: argparse._SubParsersAction) -> None:
    p = _run_parser(sub, "saliency", "Grad-CAM of each boxed finding and the pointing game against the boxes",
                    scored=True)
    p.add_argument("--max-images", type=_capped(_positive_int, "max_images"), help="the first N images with a box (default: all)")
    p.add_argument("--tolerance", type=_non_negative_float, metavar="PX",
                   help="a peak this many network-input pixels from a box still hits (default: 2.5%% of the side, "
                        "8 px at 320)")
    p.add_argument("--target-layer", help="the network module Grad-CAM reads (default: the last block before "
                                          "pooling; class_layers.relu for DenseNets)")
    p.add_argument("--boxes", type=Path, help="box list in NIH's layout (default: BBox_List_2017.csv of the data)")
    p.set_defaults(handler=_run_saliency)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number, 0 or more")
    return value


@_main_rank_only
def _run_saliency(args: argparse.Namespace) -> int:
    from mai_aug.analyses.saliency.run import saliency_run
    from mai_aug.core.layout import RunLayout

    meta = saliency_run(args.run, args.split, args.checkpoint, args.device, args.max_images, args.tolerance,
                        args.target_layer, args.boxes, args.bootstrap)
    folder = RunLayout(args.run).saliency_dir
    print((folder / "summary.md").read_text())
    print(f"wrote {folder}/pointing.csv, hit_rate.csv, grid.png, summary.md, meta.json "
          f"(tolerance {meta['tolerance_px']:g} px, layer {meta['target_layer']})")
    return 0


@command("predict")
def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = _run_parser(sub, "predict", "per-finding outputs for image files (calibrated after `mai-aug calibrate`)")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write: one row per image")
    p.set_defaults(handler=_run_predict)


@_main_rank_only
def _run_predict(args: argparse.Namespace) -> int:
    from mai_aug.analyses.evaluate.predict import predict_files

    frame = predict_files(args.run, args.images, args.out, args.checkpoint, args.device)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(frame.attrs["calibration"])
    print(f"wrote {args.out}")
    return 0


@command("export-bundle")
def _export_bundle_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-bundle", help="write a run's best checkpoint as a MONAI bundle")
    p.add_argument("--run", type=Path, required=True, help="run folder from `mai-aug train`")
    p.add_argument("--out", type=Path, required=True, help="bundle folder (configs/, models/model.pt, docs/)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out (replaces its bundle files, leaves others)")
    _add_trust_arg(p)
    p.set_defaults(handler=_run_export_bundle)


def _run_export_bundle(args: argparse.Namespace) -> int:
    import json

    from mai_aug.bundle.export import export_bundle

    out = export_bundle(args.run, args.out, overwrite=args.overwrite)
    card = json.loads((out / "configs" / "metadata.json").read_text())["mai_aug"]["model_card"]
    print(f"bundle outputs: {card['calibration']['note']}")
    if card["test_auc"]["state"] != "evaluated":
        print(f"model card: {card['test_auc']['note']}")
    print(f"wrote a MONAI bundle to {out}; run it from there with: python -m monai.bundle run --config_file "
          f"configs/inference.yaml --meta_file configs/metadata.json --input_dir DIR (or add --bundle_root {out})")
    return 0


@command("plan")
def _plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="seeds and test patients a finished comparison needs to detect a difference")
    p.add_argument("--study", type=Path, required=True, help="comparison folder from `mai-aug compare`")
    p.add_argument("--detect", type=_detect, default=0.01, metavar="D",
                   help="the true AUC difference to detect with 80%% power at 95%% (default: %(default)s)")
    p.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from mai_aug.study.plan import plan_study

    table = plan_study(args.study, args.detect)
    print(table.drop(columns=["power"]).to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    print("seeds_needed: at these test patients; test_patients_needed: at these seeds; -: not reachable that way, "
          "or unknown with one seed")
    return 0


@command("compare")
def _compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the study: train and evaluate every regime, report paired differences")
    p.add_argument("--data", type=Path, help="dataset folder, any layout --dataset reads (NIH, CheXpert, or --dataset "
                                             "csv with --csv; default: the embedded synthetic phantom)")
    p.add_argument("--csv", type=Path, help="metadata CSV of --data (default: the adapter's)")
    add_setting_flags(p, (name for name in DATA_OPTIONS if name != "csv"))
    p.add_argument("--regimes", nargs="+", help="regimes to compare (default: the preset's)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=_seeds, metavar="N|A-B",
                       help="training seeds per regime: N (seeds 0 to N-1) or a range A-B (default: the preset's, else 1)")
    seeds.add_argument("--seed-list", dest="seeds", nargs="+", type=_seed, metavar="K",
                       help="these training seeds (adds seeds to a finished study: only the new ones train, the report "
                            "covers every finished seed)")
    p.add_argument("--preset", default="demo", help="demo, article, full, robustness, external, or a preset YAML file")
    p.add_argument("--regimes-file", action="append", default=[], type=Path, help="YAML adding or overriding regimes")
    p.add_argument("--device", default=BY_NAME["device"].default, help=BY_NAME["device"].help)
    p.add_argument("--cache-dir", type=Path, help="where the phantom is generated once (default: ~/.cache/mai_aug)")
    p.add_argument("--bootstrap", type=_bootstrap, help="bootstrap resamples (default: the preset's)")
    p.add_argument("--detect", type=_detect, metavar="D",
                   help="the AUC difference the planning section sizes seeds and test patients for (default: the "
                        "preset's, else 0.01)")
    add_compare_train_flags(p)  # the settings tagged compare_routes (mai_aug/settings/schema.py)
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")
    p.add_argument("--out", type=Path, required=True, help="comparison folder")
    p.add_argument("--retrain", action="store_true",
                   help="retrain runs in --out whose settings, regime or data differ (the old ones are moved aside)")
    add_setting_flags(p, IMAGE_CHECKS)
    _add_trust_arg(p)
    _add_compare_robustness_args(p)
    _add_compare_curve_args(p)
    _add_external_args(p, study=True)
    _add_executor_args(p)
    p.set_defaults(handler=_run_compare)


def _compare_external(args: argparse.Namespace) -> Any:
    """A study's external set from ``--external`` and its options; None without ``--external``."""
    from mai_aug.analyses.external.data import ExternalSpec

    if not _external_wanted(args, [("--external-uncertain", bool(args.external_uncertain))],
                            " (a preset's external: entry has its own keys)"):
        return None
    return ExternalSpec(args.external, args.external_dataset, args.external_split, args.label_map, args.lesion,
                        args.external_uncertain, args.external_name)


def _add_executor_args(p: argparse.ArgumentParser) -> None:
    from mai_aug.core.choices import EXECUTORS, SLURM_CLUSTERS  # plain data: no torch before a command runs

    g = p.add_argument_group("where the runs go (each run is one job)")
    g.add_argument("--executor", choices=EXECUTORS, default=EXECUTORS[0],
                   help="local: one after another in this process (default); ray: one Ray task per run "
                        "(pip install -e \".[ray]\"); slurm: a SLURM job array through submitit (\".[slurm]\")")
    g.add_argument("--report-only", action="store_true",
                   help="train nothing: report the runs that finished and list the others (the same command's "
                        "settings; after jobs ran elsewhere)")
    g.add_argument("--cpus-per-run", type=_capped(_positive_int, "threads"), default=1, metavar="N",
                   help="ray, slurm: CPUs per run, and its torch threads unless --threads is given (default: 1)")
    g.add_argument("--gpus-per-run", type=_non_negative_float, metavar="G",
                   help="ray: GPUs per run, fractions allowed (default: 1 where the cluster has GPUs, else 0)")
    g.add_argument("--ray-address", metavar="auto|HOST:PORT",
                   help="ray: join this running cluster (default: start a local instance on this machine's devices)")
    g.add_argument("--slurm-partition", help="slurm: the partition (default: the cluster's)")
    g.add_argument("--slurm-time", type=_capped(_positive_int, "slurm_time"), default=240, metavar="MIN",
                   help="slurm: each job's time limit in minutes (default: 240); a run stopped by it resumes at the "
                        "next compare")
    g.add_argument("--slurm-gpus-per-run", type=_capped(_non_negative_int, "threads"), default=1, metavar="N",
                   help="slurm: GPUs per job (default: 1)")
    g.add_argument("--slurm-array-parallelism", type=_capped(_positive_int, "workers"), default=64, metavar="N",
                   help="slurm: at most this many jobs of the array at once (default: 64)")
    g.add_argument("--slurm-args", nargs="+", default=[], metavar="KEY=VALUE",
                   help="slurm: more sbatch options, without their -- (qos=high account=lab)")
    g.add_argument("--slurm-cluster", choices=SLURM_CLUSTERS, default=SLURM_CLUSTERS[0],
                   help="slurm: submit to SLURM (default), or run the array with submitit's local executor here")


def _seeds(text: str) -> list[int]:
    """``--seeds N`` (0 to N-1) or ``--seeds A-B``."""
    from mai_aug.study.seed_list import parse_seeds  # plain Python: no torch before a command runs

    try:
        return parse_seeds(text)
    except MaiAugError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def _seed(text: str) -> int:
    """One seed of ``--seed-list``: at least 0 and below 2**32."""
    from mai_aug.study.seed_list import SEED_END

    value = integer(text)
    if not 0 <= value < SEED_END:
        raise argparse.ArgumentTypeError(f"{text} is not at least 0 and below 2**32 (numpy's seed range)")
    return value


def _add_compare_robustness_args(p: argparse.ArgumentParser) -> None:
    from mai_aug.transforms.shift_levels import SHIFT_TYPES  # plain data: no torch before a command runs

    p.add_argument("--robustness", nargs="*", choices=list(SHIFT_TYPES), metavar="SHIFT",
                   help=f"also sweep every run under test-time shifts ({', '.join(SHIFT_TYPES)}; none named: all) "
                        "and report macro AUC per level and regime with paired differences")
    p.add_argument("--robustness-levels", nargs="+", default=[], metavar="SHIFT=V1,V2",
                   help="levels of a shift instead of its defaults (see `mai-aug robustness --help`)")
    p.add_argument("--tta", type=_capped(_non_negative_int, "tta"), default=0, metavar="N",
                   help="also evaluate every run with test-time augmentation (N draws of its regime's random part) "
                        "and report macro AUC with and without per regime (default: off)")
    p.add_argument("--site-data", type=Path,
                   help="with --robustness: a phantom made with --test-shift site (the study's phantom settings) "
                        "whose test images become the shift 'site'")
    p.add_argument("--saliency", action="store_true",
                   help="also play the pointing game (Grad-CAM peak in a finding's box) on every run and report hit "
                        "rates per finding and regime with paired differences")
    p.add_argument("--saliency-tolerance", type=_non_negative_float, metavar="PX",
                   help="with --saliency: see `mai-aug saliency --tolerance`")
    p.add_argument("--saliency-max-images", type=_capped(_positive_int, "saliency_max_images"), metavar="N",
                   help="with --saliency: the first N test images with a box (default: all)")
    p.add_argument("--saliency-force", action="store_true",
                   help="with --saliency: play the pointing game even where Grad-CAM's map is smaller than 8x8")
    p.add_argument("--export-tables", action="store_true",
                   help="also write every table of report.md as OUT/tables/NN-<name>.csv and .tex (LaTeX booktabs)")


def _train_fraction(text: str) -> float:
    """A training fraction in (0, 1] (``compare --train-fraction``)."""
    from mai_aug.data.subsets import parse_fraction  # plain Python: no torch before a command runs

    try:
        return parse_fraction(text)
    except MaiAugError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("`train_fraction` ")) from None


def _add_compare_curve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train-fraction", dest="train_fractions", nargs="+", type=_train_fraction, metavar="F",
                   help="also train every regime on nested patient subsets of the training split (fractions in "
                        "(0, 1]; 1 is the study's own runs, always included) and report macro AUC against training "
                        "size with paired differences at each size")


def _run_compare(args: argparse.Namespace) -> int:
    from mai_aug.core.layout import StudyLayout
    from mai_aug.core.threads import default_threads, use_threads
    from mai_aug.reports.compare import headline_table
    from mai_aug.stats.paired import baseline_regime
    from mai_aug.study.compare import CompareOptions, run_compare

    use_threads(args.threads or default_threads())  # each run then uses its own settings' (the preset's or these)
    overrides = {k: getattr(args, k) for k in COMPARE_TRAIN_FLAGS}
    opts = CompareOptions(out=args.out, data=args.data, preset=args.preset, regimes=args.regimes, seeds=args.seeds,
                          regimes_file=[str(p) for p in args.regimes_file], device=args.device,
                          cache_dir=args.cache_dir, train_overrides=overrides, bootstrap=args.bootstrap,
                          quiet=args.quiet, retrain=args.retrain, verify_images=args.verify_images,
                          skip_bad_images=args.skip_bad_images, data_options=_data_options(args),
                          robustness=args.robustness, robustness_levels=args.robustness_levels,
                          site_data=args.site_data, tta=args.tta, train_fractions=args.train_fractions,
                          saliency=args.saliency, saliency_tolerance=args.saliency_tolerance,
                          saliency_max_images=args.saliency_max_images, detect=args.detect,
                          saliency_force=args.saliency_force, export_tables=args.export_tables,
                          executor=_executor_options(args), report_only=args.report_only,
                          external=_compare_external(args))
    summary = run_compare(opts)
    if summary is None:  # a non-zero torchrun rank
        return 0
    print()
    print(headline_table(summary, baseline_regime(dict.fromkeys(summary["regime"]))).to_string(index=False))
    study = StudyLayout(args.out)
    print(f"\nreport: {study.report}; TensorBoard: tensorboard --logdir {study.tensorboard}")
    return 0


def _executor_options(args: argparse.Namespace) -> Any:
    """``--executor`` and its options, for :class:`mai_aug.study.executors.base.ExecutorOptions`."""
    from mai_aug.study.executors.base import ExecutorOptions

    return ExecutorOptions(kind=args.executor, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                           ray_address=args.ray_address, slurm_partition=args.slurm_partition,
                           slurm_time=args.slurm_time, slurm_gpus_per_run=args.slurm_gpus_per_run,
                           slurm_array_parallelism=args.slurm_array_parallelism, slurm_args=list(args.slurm_args),
                           slurm_cluster=args.slurm_cluster)


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--csv``, ``--dataset`` and its adapters' options, for :class:`mai_aug.data.datasets.DataSource`."""
    return {name: getattr(args, name) for name in DATA_OPTIONS}


def build_parser() -> argparse.ArgumentParser:
    """The ``mai-aug`` parser with one sub-command per workflow."""
    parser = OneLineParser(prog="mai-aug", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def _flags_by_setting(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each setting ``parser``'s flags set, by name: the flag of the same name (``image_size``: ``--image-size``),
    else the first flag storing into it (``weighted_loss``: ``--no-weighted-loss``, ``progress``: ``--quiet``)."""
    by_option: dict[str, str] = {}
    by_dest: dict[str, str] = {}
    for action in parser._actions:  # argparse has no public list of a parser's arguments
        flags = [o for o in action.option_strings if o.startswith("--")]
        for flag in flags:
            by_option.setdefault(flag[2:].replace("-", "_"), flag)
        if flags:
            by_dest.setdefault(action.dest, flags[0])
    return {**by_dest, **by_option}


def flag_naming(command: argparse.ArgumentParser,
                others: Sequence[argparse.ArgumentParser] = ()) -> Callable[[str], str]:
    """How the command line shows a setting a library message names: the flag of ``command`` (the command that ran)
    that sets it, else another command's (``test_shift``: ``phantom``'s ``--test-shift``), else its bare name (a
    settings-file or preset key)."""
    tables = [_flags_by_setting(parser) for parser in (command, *others)]
    return lambda name: next((table[name] for table in tables if name in table), name)


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's parser of ``mai-aug``'s ``parser``, by name."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mai-aug`` with ``argv``; user errors print one line and return 2, SIGINT/SIGTERM 130/143."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad argument (one line, status 2) or --help (status 0)
        return int(e.code or 0)
    commands = command_parsers(parser)
    show_settings_as(flag_naming(commands[args.command], [p for name, p in commands.items() if name != args.command]))
    try:
        with raise_on_signals(), _trust_context(args):  # SIGTERM too: the ``finally`` blocks run, the lock is freed
            return int(args.handler(args) or 0)
    except MaiAugError as e:
        print(f"mai-aug {args.command}: error: {shown(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: one line, the shell's status (130, 143)
        print(f"mai-aug {args.command}: {interrupted_message(e)}", file=sys.stderr)
        return exit_status(e)
    except Exception as e:  # a MaiAugError raised inside MONAI (a transform, a DataLoader worker) arrives wrapped
        message = wrapped_message(e)
        if message is None:
            raise
        print(f"mai-aug {args.command}: error: {shown(message)}", file=sys.stderr)
        return 2
    finally:
        show_settings_as(None)
        _leave_process_group()


def _leave_process_group() -> None:
    """Tear down torchrun's process group, if a command joined one, and join its gloo threads before Python exits.

    ``destroy_process_group`` alone left the group alive in DDP's reducer (inside the engines' reference cycles), so
    its threads ran into interpreter shutdown: one still freeing the last barrier's work took the GIL there to drop a
    tensor and was ended mid-destructor, ``terminate called without an active exception`` (SIGABRT). Here the cycles
    are collected first and the last reference is ``group``, whose destructor joins the threads with the GIL released.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    group = dist.group.WORLD
    dist.destroy_process_group()
    gc.collect()
    del group


if __name__ == "__main__":
    sys.exit(main())
