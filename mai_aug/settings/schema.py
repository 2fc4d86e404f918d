"""Every training setting, declared once: its flag, help, type, default, choices, range and what it is to a run.

The rest is generated from :data:`FIELDS`: :class:`~mai_aug.settings.config.TrainConfig` (its fields and defaults),
the ``train`` flags and ``compare``'s train flags (:mod:`mai_aug.settings.flags`), the checks of a ``--settings``
file, a preset's ``train:`` and ``data:`` sections and a run's ``config.yaml`` (:mod:`mai_aug.settings.checks`),
the fingerprint's settings, the resume rule and the name sets below. A new setting is one :class:`Field` here
(and its use).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass
from typing import Any

from mai_aug.core.choices import (
    AUGMENT_ON,
    CACHE_MODES,
    COMPILE_MODES,
    DATASETS,
    IN_CHANNELS,
    SPLIT_MODES,
    UNCERTAIN_POLICIES,
    VIEWS,
)
from mai_aug.core.threads import default_threads


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``low``/``high`` inclusive (exclusive where ``*_open``), None unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    says: str = ""  # the words for the bound where the generated ones would not say why

    def holds(self, value: float) -> bool:
        """Whether ``value`` is within the bounds."""
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def words(self) -> str:
        """``at least 1``, ``above 0``, ``in [0, 1)``: what a value must be."""
        if self.says:
            return self.says
        if self.high is None:
            return f"{'above' if self.low_open else 'at least'} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


#: numpy's seed range.
SEED_RANGE = Range(0, 2**32, high_open=True, says="at least 0 and below 2**32 (numpy's seed range)")


@dataclass(frozen=True)
class Field:
    """One setting.

    Attributes:
        name: the TrainConfig field and the key of a settings file, a preset's ``train:`` and ``config.yaml``.
        type: its type hint (``int``, ``str | None``, ``list[str]``...), checked in every file that sets it.
        default: its default (``MISSING``: required); ``factory`` makes a mutable or computed one.
        help: the flag's help (``%(default)s`` is the default).
        flag: the ``train`` flag; ``""``: ``--name-with-dashes``; None: none (a settings file or compare sets it).
        action: argparse's ``store_true``/``store_false``/``append``, or ``bool`` (``--x/--no-x``).
        nargs, metavar: as argparse's.
        parse: a command-line parser of :data:`mai_aug.settings.flags.PARSERS` (``path``, ``yaml``, ``metric``).
        choices: the values allowed (each item of a list); ``flag_choices``: on the command line only.
        range: the bounds of a number.
        changes_results: part of the run's fingerprint (where and how fast it runs, what it logs are not).
        resumable: may change on ``--resume``.
        split_setting: reads or splits ``--data`` (refused beside a ``--datalist``).
        in_preset: a preset's ``train:`` may set it.
        compare_routes: ``compare`` has the flag too, overriding its preset (``compare_help``).
        data_option: how ``--data`` is read (:class:`mai_aug.data.datasets.DataSource`; ``compare`` passes it on).
        preset_data: its key in a preset's ``data:`` section, where compare applies it once for all runs.
    """

    name: str
    type: Any
    default: Any = None
    factory: Callable[[], Any] | None = None
    help: str = ""
    flag: str | None = ""
    action: str | None = None
    nargs: str | None = None
    metavar: str | None = None
    parse: str | None = None
    choices: tuple | None = None
    flag_choices: tuple | None = None
    range: Range | None = None
    changes_results: bool = True
    resumable: bool = False
    split_setting: bool = False
    in_preset: bool = True
    compare_routes: bool = False
    compare_help: str = "overrides the preset"
    data_option: bool = False
    preset_data: str | None = None

    @property
    def option(self) -> str | None:
        """The command-line flag, or None."""
        return f"--{self.name.replace('_', '-')}" if self.flag == "" else self.flag

    @property
    def file_only(self) -> bool:
        """No ``train`` flag: only a settings file (or compare) sets it."""
        return self.flag is None

    def default_value(self) -> Any:
        """The default (a fresh one where ``factory`` makes it)."""
        return self.factory() if self.factory else self.default


def _source(name: str, kind: Any = str | None, help: str = "", **more: Any) -> Field:
    """A setting of how ``--data`` is read and split: no part of the fingerprint (the datalist stands for it)."""
    return Field(name, kind, help=help, changes_results=False, split_setting=True, in_preset=False, **more)


def _adapter(name: str, help: str, kind: Any = str | None, **more: Any) -> Field:
    """An option of ``--dataset``'s adapters, which ``compare`` passes on too."""
    return _source(name, kind, help, data_option=True, **more)


def _run(name: str, kind: Any, default: Any = None, help: str = "", **more: Any) -> Field:
    """A setting of where, how fast and how loudly a run runs: may change on resume, no part of the fingerprint."""
    return Field(name, kind, default, help=help, changes_results=False, resumable=True, **more)


FIELDS: tuple[Field, ...] = (
    _run("out", str, MISSING, "run folder (required here or as out: in --settings)", parse="path", in_preset=False),
    Field("regime", str, "basic", help="augmentation regime (see `mai-aug regimes`; default: %(default)s)",
          in_preset=False),
    Field("data", str | None, help="dataset folder: NIH layout (CSV + images/), CheXpert (train.csv, valid.csv) or, "
          "with --dataset csv, the folder image paths are relative to", parse="path", changes_results=False,
          in_preset=False),
    Field("datalist", str | None, help="datalist JSON from `mai-aug split`", parse="path", changes_results=False,
          in_preset=False),
    _adapter("csv", "metadata CSV (default: DIR/Data_Entry_2017_v2020.csv, CheXpert's DIR/train.csv; required by "
             "--dataset csv)", parse="path"),
    _source("images", help="image folder (default: DIR/images and DIR/images_*)", parse="path", preset_data="images"),
    _source("views", list[str], "view positions to keep (default: %(default)s)", factory=lambda: list(VIEWS),
            nargs="+", choices=VIEWS),
    _adapter("dataset", "layout of --data (auto: nih with Data_Entry_2017*.csv, chexpert with CheXpert's train.csv; "
             "default: %(default)s)", str, default="auto", flag_choices=DATASETS),
    _adapter("uncertain", "CheXpert's uncertain (-1) labels: ones (become 1, the default), zeros (become 0), or "
             "ignore (unknown: left out of the loss and of that finding's AUC)", choices=UNCERTAIN_POLICIES),
    _adapter("image_column", "--dataset csv: image path column"),
    _adapter("labels_column", "--dataset csv: one column of --label-sep-joined label names"),
    _adapter("label_sep", "separator of --labels-column (default: %(default)s)", str, default="|"),
    _adapter("label_columns", "--dataset csv: one 0/1 column per label", list[str], factory=list, nargs="+"),
    _adapter("patient_column", "--dataset csv: patient id column (without it each image is its own patient)"),
    _source("split", str, "how to split (always by patient; default: %(default)s)", default="patient",
            choices=SPLIT_MODES, preset_data="split"),
    _source("val_frac", float, "fraction of images for validation (default: %(default)s)", default=0.1,
            range=Range(0, 1, high_open=True), preset_data="val_frac"),
    _source("test_frac", float, "fraction of images for test (default: %(default)s)", default=0.2,
            range=Range(0, 1, high_open=True), preset_data="test_frac"),
    _source("require_all_images", bool, "error if any CSV row has no image file", default=False,
            action="store_true"),
    _source("split_seed", int, "seed of the --data split (--seed seeds training only; default: %(default)s)",
            default=0, range=SEED_RANGE, preset_data="seed"),
    Field("regimes_file", list[str], factory=list, help="YAML adding or overriding regimes (repeatable)",
          action="append", parse="path", changes_results=False, in_preset=False),  # the regime spec stands for it
    Field("image_size", int, 320, help="training image size (px; default: %(default)s)",
          range=Range(32, says="at least 32 px (DenseNet121 downsamples 32x)"),
          compare_routes=True),
    Field("batch_size", int, 8, help="default: %(default)s", range=Range(1), compare_routes=True),
    Field("epochs", int, 10, help="default: %(default)s", range=Range(1), resumable=True, compare_routes=True),
    Field("steps_per_epoch", int | None, help="iterations per epoch (default: one pass)", range=Range(1),
          compare_routes=True),
    Field("lr", float, 1e-4, help="Adam learning rate (cosine schedule over the epochs; default: %(default)s)",
          range=Range(0, low_open=True), compare_routes=True),
    Field("weight_decay", float, 0.0, flag=None, range=Range(0)),
    Field("weighted_loss", bool, True, help="plain BCE instead of class-balanced BCE", flag="--no-weighted-loss",
          action="store_false"),
    Field("pretrained", str, "none", help="none, imagenet (downloads), or a torchvision .pth of the same DenseNet or "
          "ResNet (default: %(default)s)", compare_routes=True, compare_help="overrides the preset: none, imagenet "
          "or a .pth"),
    Field("network", str, "densenet121", help="a 2D classifier of monai.networks.nets, any case: densenet121/169/201, "
          "resnet18/34/50/101/152, seresnet50, efficientnet-b0..b8, vit...; or a _target_ such as "
          "monai.networks.nets.ResNet (default: %(default)s)", compare_routes=True,
          compare_help="overrides the preset's network (its network_args are kept only for the same one)"),
    Field("network_args", dict[str, Any], factory=dict, parse="yaml", metavar="YAML",
          help="extra constructor arguments, e.g. '{patch_size: 8, hidden_size: 192}'"),
    Field("in_channels", int, 1, help="default: %(default)s", choices=IN_CHANNELS),
    _run("device", str, "auto", "auto (CUDA when present), cpu or cuda (default: %(default)s)", in_preset=False),
    Field("amp", bool | None, help="mixed precision: float16 autocast on CUDA (default there), bfloat16 autocast on "
          "CPU (opt-in)", action="bool"),
    Field("channels_last", bool | None, help="the network in channels_last memory format (default: on with CUDA, off "
          "on CPU)", action="bool"),
    Field("fused_adam", bool | None, help="Adam's fused kernel (default: on with CUDA, off on CPU)", action="bool"),
    Field("compile", str, "off", help="torch.compile the network: off, default, or reduce-overhead (CUDA graphs on "
          "CUDA) (default: %(default)s)", choices=COMPILE_MODES),
    Field("seed", int, 0, help="default: %(default)s", range=SEED_RANGE),
    _run("workers", int, help="data-loader workers (default: up to 4)", factory=lambda: min(4, os.cpu_count() or 1),
         range=Range(0), compare_routes=True),
    _run("threads", int, help="torch's CPU threads (default: OMP_NUM_THREADS where set, else the cores available to this "
         "process, shared among torchrun's processes on a node)", factory=default_threads, metavar="N", range=Range(1),
         compare_routes=True, compare_help="torch's CPU threads of every run (overrides the preset; default: "
         "OMP_NUM_THREADS where set, else the cores available)"),
    _run("cache", str, "store", "store: decode each image once into the image store under --cache-dir, shared by "
         "every run, regime and study; none: decode every time (default: %(default)s)", choices=CACHE_MODES),
    Field("augment_on", str, "auto", help="run the regime per image in the data loader, or batched on the training "
          "device (auto: device where the regime compiles; default: %(default)s)", choices=AUGMENT_ON),
    _run("cache_dir", str | None, help="cache root: image stores in DIR/images (default: $MAI_AUG_CACHE, else "
         "~/.cache/mai_aug)", parse="path", metavar="DIR", in_preset=False),
    Field("early_stop", int, 0, help="stop after PATIENCE epochs without gain (default: %(default)s, never)",
          metavar="PATIENCE", range=Range(0)),
    _run("checkpoint_every", int, 0, "also checkpoint every N iterations inside an epoch (default %(default)s: at "
         "epoch ends only)", metavar="N", range=Range(0)),
    _run("resume", bool, False, "continue the run in --out from its last checkpoint", action="store_true",
         in_preset=False),
    _run("progress", bool, True, "no progress output on the terminal", flag="--quiet", action="store_false",
         in_preset=False),
    Field("tensorboard_dir", str | None, flag=None, changes_results=False, in_preset=False),
    Field("hparams", bool, False, flag=None, changes_results=False, in_preset=False),
    _run("verify_images", bool, False, "decode every listed image first (threads); if any is unreadable, stop with "
         "their count, naming the first", action="store_true"),
    _run("skip_bad_images", bool, False, "decode every listed image first and drop unreadable ones (counted, listed "
         "in bad_images.csv)", action="store_true"),
    # validation metrics (stats/scores.py), auc always; a mapping is a user's metric ({_target_: ..., name: ...})
    _run("metrics", list[str | dict[str, Any]], factory=lambda: ["auc"], nargs="+", parse="metric", metavar="METRIC",
         help="per-finding metrics logged at each validation (TensorBoard, metrics.csv): auc (always on), ap, ece, "
              "sens@spec (specificity 0.9) or sens@specX (e.g. sens@spec0.95) (default: %(default)s)",
         compare_routes=True, compare_help="per-finding metrics logged in validation and reported with paired "
         "differences (overrides the preset): auc (always on), ap, ece, sens@spec (specificity 0.9) or sens@specX "
         "(e.g. sens@spec0.95)"),
)

#: The fields by name.
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def names_where(test: Callable[[Field], bool], fields: Iterable[Field] = FIELDS) -> tuple[str, ...]:
    """The names of ``fields`` that pass ``test``, in declaration order."""
    return tuple(f.name for f in fields if test(f))


def preset_fields(fields: Iterable[Field] = FIELDS) -> dict[str, Field]:
    """The fields a preset's ``train:`` may set."""
    return {f.name: f for f in fields if f.in_preset}


def preset_data_fields(fields: Iterable[Field] = FIELDS) -> dict[str, Field]:
    """A preset's ``data:`` keys, each the field it sets (named by its key there)."""
    return {f.preset_data: dataclasses.replace(f, name=f.preset_data) for f in fields if f.preset_data}


def dataclass_fields(fields: Iterable[Field] = FIELDS) -> list[tuple[str, Any, Any]]:
    """``(name, type, dataclasses.field)`` of each field, for :func:`dataclasses.make_dataclass`.

    Each dataclass field carries its :class:`Field` as ``metadata["setting"]``.
    """
    made = []
    for f in fields:
        default = {"default_factory": f.factory} if f.factory else {"default": f.default}
        made.append((f.name, f.type, dataclasses.field(**default, metadata={"setting": f})))
    return made


def setting_of(dataclass_field: dataclasses.Field) -> Field:
    """The :class:`Field` a generated dataclass field was made from."""
    return dataclass_field.metadata["setting"]


#: Settings that do not change what a run computes; the datalist's content stands for the data-source ones.
NOT_RESULTS = frozenset(names_where(lambda f: not f.changes_results))
#: Settings that may change when a run resumes.
RESUMABLE = frozenset(names_where(lambda f: f.resumable))
#: Settings that read and split ``--data``; beside a ``--datalist`` they would do nothing.
SPLIT_SETTINGS = names_where(lambda f: f.split_setting)
#: Settings a preset's ``train:`` may not set: a run's identity, per-invocation switches, how ``--data`` is read.
NOT_IN_PRESET = frozenset(names_where(lambda f: not f.in_preset))
#: ``compare``'s flags that override its preset's ``train:`` section.
COMPARE_TRAIN_FLAGS = names_where(lambda f: f.compare_routes)
#: Settings without a ``train`` flag.
FILE_ONLY = frozenset(names_where(lambda f: f.file_only))
#: How ``--data`` is read (``--csv``, ``--dataset`` and its adapters' options).
DATA_OPTIONS = names_where(lambda f: f.data_option)
