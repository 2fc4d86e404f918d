"""``mai-aug export-bundle``: a run folder written as a MONAI bundle (configs/, models/model.pt, docs/).

Only the run's own files are read (config.yaml with its stored regime spec, datalist.json, checkpoints/best.pt);
the stored spec is rebuilt under the same data-only rules as ``mai-aug predict`` (code only with --trust-config).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mai_aug.analyses.calibration.run import load_calibration
from mai_aug.analyses.trained_run import TrainedRun, checkpoint_identity
from mai_aug.bundle.card import model_card
from mai_aug.bundle.inference import MODEL_FILE, inference_config, network_config
from mai_aug.bundle.metadata import metadata, readme
from mai_aug.bundle.transforms import foreign_packages
from mai_aug.core.errors import MaiAugError
from mai_aug.core.files import write_text_atomic
from mai_aug.core.layout import RunLayout
from mai_aug.core.preflight import require_writable_folder
from mai_aug.core.user_yaml import dump_yaml
from mai_aug.engine.checkpoint import load_checkpoint, save_atomic
from mai_aug.engine.precision import trained_dtype
from mai_aug.settings.config import read_config

YAML_HEADER = ("# MONAI bundle inference config written by `mai-aug export-bundle`; run it from the bundle folder with\n"
               "#   python -m monai.bundle run --config_file configs/inference.yaml "
               "--meta_file configs/metadata.json --input_dir DIR\n"
               "# (from elsewhere, add --bundle_root BUNDLE)\n")
# MONAI model-zoo's bundle_root: the folder the bundle runs from, so the bundle holds no path of this machine and
# runs wherever it is copied
BUNDLE_ROOT = "."


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder without ``overwrite``; check it takes files."""
    if out.exists() and not out.is_dir():
        raise MaiAugError(f"`out` {out}: is a file, expected a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MaiAugError(f"`out` {out}: not empty (pass `overwrite` to replace its bundle files)")
    require_writable_folder(out, "`out`")


def export_bundle(run_dir: str | Path, out: str | Path, overwrite: bool = False, trust: bool | None = None) -> Path:
    """Write the run's best checkpoint as a MONAI bundle in ``out``; return ``out``.

    The run's ``calibration.json``, where fitted for ``best.pt`` as it is now, is applied in ``inference.yaml``;
    ``metadata.json`` and ``docs/README.md`` carry the model card (:mod:`mai_aug.bundle.card`).

    Args:
        run_dir: a run folder from ``mai-aug train``.
        out: the bundle folder (created; an existing non-empty one only with ``overwrite``).
        overwrite: replace the bundle files in a non-empty ``out`` (other files there are left alone).
        trust: allow code in the run's stored regime spec (``--trust-config``); None: the command line's setting.

    Raises:
        MaiAugError: no run folder, no ``checkpoints/best.pt``, ``out`` not empty, or a spec that cannot be exported.
    """
    run_dir, out = Path(run_dir), Path(out)
    raw = read_config(run_dir)
    best = RunLayout(run_dir).best
    if not best.is_file():
        raise MaiAugError(f"`run` {run_dir}: no {best.relative_to(run_dir)} (has the run finished an epoch?)")
    check_out(out, overwrite)
    run = TrainedRun(run_dir, "best", "cpu", trust)  # checks the spec and that the checkpoint fits the network
    raw = {**raw, "resolved": {**(raw.get("resolved") or {}), "findings": run.names}}  # or the datalist's labels
    network = network_config(raw, trust)
    trained = trained_dtype(raw)
    calibration = load_calibration(run_dir, best, run.names)  # applied only if fitted for best.pt as it is now
    maps = None if calibration.maps is None else [(m.slope, m.intercept) for m in calibration.maps]
    config = inference_config(raw, run.regime, run.names, BUNDLE_ROOT, trained == torch.float16,
                              cpu_autocast=trained == torch.bfloat16, calibration=maps)
    foreign = foreign_packages(config)
    best_state = load_checkpoint(best)
    identity = {**checkpoint_identity(best), "epoch": best_state.get("epoch"), "metric": best_state.get("metric")}
    named = {**raw, **_names_only(raw, run_dir)}  # the bundle names the run and data, never this machine's paths
    meta = metadata(named, run.regime, run.names, network, identity, foreign, model_card(run, named, calibration))
    for folder in ("configs", "models", "docs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    save_atomic(run.network.state_dict(), out / MODEL_FILE)  # MONAI's convention: the bare state dict
    write_text_atomic(out / "configs" / "inference.yaml", YAML_HEADER + dump_yaml(config, width=120))
    write_text_atomic(out / "configs" / "metadata.json", json.dumps(meta, indent=4) + "\n")
    write_text_atomic(out / "docs" / "README.md", readme(meta, foreign))
    return out


def _names_only(raw: dict, run_dir: Path) -> dict[str, str | None]:
    """The run folder (its last two parts) and its data as names, not this machine's paths."""
    names = {key: Path(raw[key]).name if raw.get(key) else raw.get(key) for key in ("data", "datalist")}
    return {"out": "/".join(run_dir.resolve().parts[-2:]), **names}
