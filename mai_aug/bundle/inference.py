"""``configs/inference.yaml``: a MONAI ConfigWorkflow that runs a run's network on a folder of images.

The ids follow MONAI's inference properties (``monai.bundle.properties.InferProperties``): ``bundle_root``,
``device``, ``dataset_dir``, ``dataset``, ``network_def``, ``inferer``, ``preprocessing``, ``postprocessing``,
``evaluator``, plus ``initialize`` and ``run`` for ``python -m monai.bundle run``. Overridable on that command
line: ``--input_dir`` (the folder of images), ``--image_glob``, ``--output_dir``, ``--output_filename``,
``--batch_size``, ``--num_workers``, ``--bundle_root``. A calibrated run's bundle also has ``calibration_slope`` and
``calibration_intercept`` (one number per finding), applied in ``postprocessing``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from mai_aug.bundle.transforms import monai_only, to_uint8
from mai_aug.core.errors import MaiAugError
from mai_aug.networks.spec import stored_network
from mai_aug.transforms.regimes import IMAGE, Regime

MODEL_FILE = "models/model.pt"
PATH_KEY = "image_path"  # the file name, carried beside the image (the 8-bit step drops the image's metadata)
UNEXPORTABLE = ("vit", "custom")  # families built through a mai_aug wrapper or from a trusted user class


def network_config(run_config: dict[str, Any], trust: bool | None = None) -> dict[str, Any]:
    """The bundle's ``network_def`` for a run's ``config.yaml``: the network ``mai-aug train`` built, from its
    stored spec (checked as data, as evaluate and predict check it).

    Raises:
        MaiAugError: a network that only runs through a mai_aug wrapper (ViT, whose forward returns a tuple).
    """
    findings = (run_config.get("resolved") or {}).get("findings") or []
    spec = stored_network(run_config, len(findings), "`run`", trust)
    if spec.family in UNEXPORTABLE:
        raise MaiAugError(f"`run`: network {spec.name!r} ({spec.family}) cannot be exported yet: mai_aug wraps its "
                          f"forward, which a bundle cannot express without mai_aug")
    return {"_target_": spec.target, **spec.args}


def input_channels(run_config: dict[str, Any]) -> int:
    """The network input's channels of a run, as ``mai-aug predict`` reads them: 1, or 3 (the grayscale repeated).

    From the run's settings, not from ``network_def``: each family names the argument its own way
    (``in_channels``, ResNet's ``n_input_channels``; see ``mai_aug.networks.spec.FAMILIES``).
    """
    return int(run_config.get("in_channels", 1))


def preprocessing(regime: Regime, in_channels: int) -> dict[str, Any]:
    """File -> network input, nested as ``mai-aug predict`` nests it (so lazy resampling acts the same).

    predict runs ``Compose([Compose([load..., ToUint8d]), Compose([head, deterministic..., tail], lazy=None)])``
    with consecutive lazy-safe deterministic transforms fused into ``Compose(lazy=True)`` blocks.
    """
    spec = regime.spec
    cache = [*monai_only(spec["load"], "load"), to_uint8(IMAGE)]
    head = [{"_target_": "EnsureTyped", "keys": IMAGE, "track_meta": True},
            {"_target_": "ScaleIntensityRanged", "keys": IMAGE, "a_min": 0, "a_max": 255, "b_min": 0, "b_max": 1,
             "dtype": "$torch.float32"}]
    tail = [{"_target_": "EnsureTyped", "keys": IMAGE, "dtype": "$torch.float32", "track_meta": False}]
    if in_channels == 3:  # predict repeats the grayscale channel on the device; the values are the same
        tail.append({"_target_": "RepeatChanneld", "keys": IMAGE, "repeats": 3})
    online = [*head, *_fused_like(spec["deterministic"], regime), *tail]
    return {"_target_": "Compose", "transforms": [
        {"_target_": "Compose", "transforms": cache},
        {"_target_": "Compose", "transforms": online, "lazy": None},
    ]}


def _fused_like(entries: list[Any], regime: Regime) -> list[Any]:
    """The deterministic ``entries``, MONAI-only, grouped into lazy ``Compose`` blocks exactly where the regime's
    instantiated part has them (mai_aug's own transforms are never lazy, so no block holds one)."""
    blocks = regime.online_parts[0]
    if sum(len(b.transforms) if _is_block(b) else 1 for b in blocks) != len(entries):
        raise MaiAugError(f"regime {regime.name!r}: its deterministic part does not match its stored spec")
    out, i = [], 0
    for block in blocks:
        n = len(block.transforms) if _is_block(block) else 1
        group = monai_only(entries[i:i + n], f"deterministic[{i}:{i + n}]")
        out += [{"_target_": "Compose", "transforms": group, "lazy": True}] if _is_block(block) else group
        i += n
    return out


def _is_block(transform: Any) -> bool:
    from monai.transforms import Compose

    return isinstance(transform, Compose) and transform.lazy is True


def csv_header(names: Sequence[str]) -> str:
    """The predictions CSV's first line: ``image`` and one column per finding (CSV-quoted where needed)."""
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(["image", *names])
    return line.getvalue()


# mai_aug.engine.precision.AutocastInferer without mai_aug: the forward under bfloat16 autocast, float32 logits. The
# autocast object is made outside the inner lambda: a lambda's body cannot see the config's @-references.
_BF16_INFERER = ("$(lambda autocast: lambda inputs, network, *args, **kwargs: "
                 "autocast(network)(inputs, *args, **kwargs).float())(torch.autocast(@device.type, dtype=torch.bfloat16))")


# the run's calibration (mai_aug.stats.calibration) on the float64 logits, before the sigmoid: slope * z + intercept
_CALIBRATE = ("$(lambda slope, intercept: lambda z: z * slope.to(z.device) + intercept.to(z.device))("
              "torch.tensor(@calibration_slope, dtype=torch.float64), "
              "torch.tensor(@calibration_intercept, dtype=torch.float64))")


def postprocessing(calibration: Sequence[tuple[float, float]] | None) -> dict[str, Any]:
    """Logits -> outputs as ``mai-aug predict`` gives them: float64, the calibration's map where there is one, sigmoid."""
    # float64 before the sigmoid, as predict: float32 sigmoids tie distinct logits near 0 and 1
    steps = [{"_target_": "CastToTyped", "keys": "pred", "dtype": "$torch.float64"}]
    if calibration is not None:
        steps.append({"_target_": "Lambdad", "keys": "pred", "func": _CALIBRATE})
    steps.append({"_target_": "Activationsd", "keys": "pred", "sigmoid": True})
    return {"_target_": "Compose", "transforms": steps}


def calibration_ids(calibration: Sequence[tuple[float, float]] | None) -> dict[str, Any]:
    """The config ids that hold the calibration's numbers (validated floats: data, never an expression)."""
    if calibration is None:
        return {}
    return {"calibration_slope": [float(a) for a, _ in calibration],
            "calibration_intercept": [float(b) for _, b in calibration]}


def inference_config(run_config: dict[str, Any], regime: Regime, names: Sequence[str], bundle_root: str,
                     amp: bool, cpu_autocast: bool = False,
                     calibration: Sequence[tuple[float, float]] | None = None) -> dict[str, Any]:
    """The whole ``inference.yaml`` content (see the module docstring for the ids).

    ``amp``: float16 autocast on CUDA (a run trained with ``--amp`` on CUDA); ``cpu_autocast``: bfloat16 autocast of
    the forward on any device (a run trained with ``--amp`` on CPU), as ``mai-aug predict`` runs each.
    ``calibration``: (slope, intercept) per finding, applied to the logits before the sigmoid; None: uncalibrated.
    """
    network = network_config(run_config)
    return {
        "imports": ["$import glob", "$import os", "$import pathlib", "$import torch", "$import monai"],
        "bundle_root": bundle_root,
        "input_dir": "$@bundle_root + '/input'",
        "dataset_dir": "@input_dir",
        "image_glob": "*.png",
        "output_dir": "$@bundle_root + '/eval'",
        "output_filename": "predictions.csv",
        "csv_header": csv_header(names),
        "batch_size": 16,
        "num_workers": 0,  # the converter and resize steps are lambdas: spawned workers cannot pickle them
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network,
        "network": "$@network_def.to(@device)",
        "preprocessing": preprocessing(regime, input_channels(run_config)),
        "datalist": f"$[{{'{IMAGE}': f, '{PATH_KEY}': f}} "
                    "for f in sorted(glob.glob(os.path.join(@dataset_dir, @image_glob)))]",
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": "@batch_size",
                       "shuffle": False, "num_workers": "@num_workers"},
        "inferer": _BF16_INFERER if cpu_autocast else {"_target_": "SimpleInferer"},
        **calibration_ids(calibration),
        "postprocessing": postprocessing(calibration),
        "handlers": [
            {"_target_": "CheckpointLoader", "load_path": f"$@bundle_root + '/{MODEL_FILE}'",
             "load_dict": {"model": "@network"}},
            {"_target_": "ClassificationSaver", "output_dir": "@output_dir", "filename": "@output_filename",
             "overwrite": False,  # appends below the header that `initialize` wrote
             "batch_transform": f"$lambda batch: [{{'filename_or_obj': b['{PATH_KEY}']}} for b in batch]",
             "output_transform": "$monai.handlers.from_engine(['pred'])"},
        ],
        # mai_aug.engine.inference.make_evaluator's settings in MONAI's syntax (no mai_aug at run time): the network
        # in eval mode, non-blocking copies on CUDA, the channel repeat in preprocessing in place of its PrepareBatch;
        # decollated here because ClassificationSaver writes one row per item
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "non_blocking": "$@device.type == 'cuda'",
                      # mixed precision on CUDA where the run trained with it, as predict does
                      "amp": "$@device.type == 'cuda'" if amp and not cpu_autocast else False},
        "initialize": ["$os.makedirs(@output_dir, exist_ok=True)",
                       "$pathlib.Path(@output_dir, @output_filename).write_text(@csv_header)"],
        "run": ["$@evaluator.run()"],
    }
