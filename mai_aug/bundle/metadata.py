"""``configs/metadata.json`` and ``docs/README.md`` of an exported bundle."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import monai
import numpy as np
import torch

import mai_aug
from mai_aug.bundle.card import card_markdown
from mai_aug.bundle.inference import input_channels
from mai_aug.transforms.regimes import Regime

# The schema MONAI's model zoo points at (monai.bundle verify_metadata downloads it).
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "0.1.0"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def required_packages(foreign: list[str]) -> dict[str, str]:
    """What the bundle imports beyond MONAI, torch and numpy: Pillow (PILReader), ignite (the evaluator), and
    ``foreign``: packages the run's transforms name (mai_aug only where a transform has no MONAI equivalent)."""
    packages = {"pillow": _package_version("pillow"), "pytorch-ignite": _package_version("pytorch-ignite")}
    for name in foreign:
        packages[name] = mai_aug.__version__ if name == "mai_aug" else _package_version(name)
    return packages


def metadata(run_config: dict[str, Any], regime: Regime, names: list[str], network: dict[str, Any],
             checkpoint: dict[str, Any], foreign: list[str], card: dict[str, Any]) -> dict[str, Any]:
    """The bundle's metadata in MONAI's schema, with the run's own facts and its model card under ``mai_aug``."""
    size, channels = int(run_config["image_size"]), input_channels(run_config)
    resolved = run_config.get("resolved") or {}
    calibrated = card["calibration"]["state"] == "calibrated"
    outputs = ("calibrated probabilities" if calibrated
               else "sigmoid outputs (uncalibrated: not calibrated probabilities)")
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by mai-aug export-bundle from run {run_config.get('out')}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": required_packages(foreign),
        "task": "Multi-label chest X-ray finding classification",
        "description": f"{network['_target_']} trained by mai_aug under augmentation regime {regime.name!r} "
                       f"({regime.description}); one independent sigmoid output per finding, "
                       + ("calibrated per finding on the run's validation split" if calibrated else "uncalibrated"),
        "authors": "exported by mai_aug " + mai_aug.__version__,
        "copyright": "not stated: set by whoever publishes this bundle and owns the training data's rights",
        "data_source": str(run_config.get("data") or run_config.get("datalist") or "unknown"),
        "data_type": "png",
        "image_classes": f"one grayscale channel{' repeated to 3' if channels == 3 else ''}, {size} x {size} px "
                         "after the run's preprocessing",
        "label_classes": ", ".join(f"{i}: {name}" for i, name in enumerate(names)),
        "pred_classes": f"{len(names)} {outputs} in [0, 1], one per finding, in label_classes' order",
        "intended_use": "research on data augmentation; not for clinical use",
        "network_data_format": _network_data_format(regime, names, size, channels),
        "mai_aug": {
            "run": str(run_config.get("out")), "regime": regime.name, "image_size": size, "in_channels": channels,
            "network": network["_target_"], "labels": list(names), "checkpoint": checkpoint,
            "trained_with": resolved.get("versions", {}), "exported_with": {"mai_aug": mai_aug.__version__,
                                                                           "monai": monai.__version__},
            "model_card": card,
        },
    }


def _network_data_format(regime: Regime, names: list[str], size: int, channels: int) -> dict[str, Any]:
    # in [0, 1] unless the deterministic part changes the range (basic's NormalizeIntensityd: zero mean, unit std)
    value_range = [] if regime.spec.get("deterministic") else [0, 1]
    return {
        "inputs": {"image": {
            "type": "image", "format": "magnitude", "modality": "xray", "num_channels": channels,
            "spatial_shape": [size, size], "dtype": "float32", "value_range": value_range, "is_patch_data": False,
            "channel_def": {str(c): "grayscale" for c in range(channels)},
        }},
        "outputs": {"pred": {
            "type": "probabilities", "format": "classes", "num_channels": len(names), "spatial_shape": [len(names)],
            "dtype": "float64", "value_range": [0, 1], "is_patch_data": False,
            "channel_def": {str(i): name for i, name in enumerate(names)},
        }},
    }


def readme(meta: dict[str, Any], foreign: list[str]) -> str:
    """``docs/README.md``: what the bundle is and the command that runs it."""
    own = meta["mai_aug"]
    versions = meta["required_packages_version"]
    if foreign:
        dependency = (f"The run's preprocessing names transforms from {', '.join(foreign)} that have no MONAI "
                      "equivalent here, so the bundle imports them: install "
                      f"{', '.join(f'{n} {versions[n]}' for n in foreign)} beside MONAI.")
    else:
        dependency = ("mai_aug is not needed: its resize, grayscale and 8-bit steps are written as the same "
                      "MONAI/torch/Pillow operations (`Lambdad` and a PILReader converter in "
                      "`configs/inference.yaml`), which give the outputs `mai-aug predict` gives.")
    labels = "\n".join(f"- {i}: {name}" for i, name in enumerate(own["labels"]))
    return f"""# {meta['task']}

{meta['description']}.

Exported from the mai_aug run `{own['run']}` (checkpoint `{own['checkpoint']['checkpoint']}`, sha256
`{own['checkpoint']['sha256']}`). Input: PNG images, any size, resized to {own['image_size']} x {own['image_size']} px.
Output: one {"calibrated probability" if own["model_card"]["calibration"]["state"] == "calibrated"
             else "uncalibrated sigmoid output"} per finding:

{labels}

{card_markdown(own["model_card"])}
## Run inference

From this folder (its paths are relative to it, `bundle_root: .`; from elsewhere add `--bundle_root DIR`):

    python -m monai.bundle run --config_file configs/inference.yaml --meta_file configs/metadata.json \\
        --input_dir /path/to/pngs --output_dir /path/to/out

writes `predictions.csv` (column `image`, then one column per finding) in `--output_dir` (default:
`<bundle_root>/eval`). Other overrides: `--image_glob '*.png'`, `--output_filename`, `--batch_size`,
`--num_workers` (0: the preprocessing holds lambdas, which spawned workers cannot pickle). On CUDA the network runs with mixed precision where the run
trained with it.

## Requirements

{', '.join(f'{k} {v}' for k, v in versions.items())}, MONAI {meta['monai_version']},
PyTorch {meta['pytorch_version']}, NumPy {meta['numpy_version']}; `python -m monai.bundle` also needs the `fire`
package (MONAI's command line).
{dependency}

{meta['intended_use'].capitalize()}.
"""
