"""report.md's methods paragraph, its trimmed configuration and regime tables, and the compute cost per run.

The full configuration stays in ``compare_config.yaml``; these tables name what a reader of a paper's supplement
needs: the network and its training, the split, the regimes' transforms, the statistics and the software.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import pandas as pd

from mai_aug.reports.compare import markdown_table
from mai_aug.reports.words import TIMES, plural

#: The training settings the configuration table names, with their labels (others get their own key).
TRAIN_LABELS = {"network": "network", "network_args": "network arguments", "pretrained": "initial weights",
                "in_channels": "input channels", "image_size": "image size", "epochs": "epochs",
                "steps_per_epoch": "steps per epoch", "batch_size": "batch size", "lr": "learning rate",
                "weight_decay": "weight decay", "weighted_loss": "loss", "early_stop": "early stopping",
                "amp": "mixed precision", "augment_on": "augmentation runs on"}
#: Study keys the tables below render themselves (everything else is listed with its key).
SHOWN = {"preset", "preset_values", "data", "regimes", "seeds", "seed_list", "bootstrap", "metrics", "train",
         "regime_specs", "device", "split_sizes", "versions", "primary", "detect"}


def _train_value(key: str, value: Any) -> str:
    """One training setting as the configuration table shows it."""
    if key == "image_size":
        return f"{value} {TIMES} {value} px"
    if key == "steps_per_epoch" and value is None:
        return "one pass over the training split"
    if key == "weighted_loss":
        return "class-balanced binary cross-entropy" if value else "binary cross-entropy"
    if key == "early_stop":
        return f"after {plural(int(value), 'epoch')} without gain" if value else "none"
    if key == "pretrained":
        return {"none": "random (trained from scratch)", "imagenet": "ImageNet"}.get(str(value), str(value))
    if key == "amp":
        return "default of the device" if value is None else "on" if value else "off"
    if key == "network_args":
        return compact(value) if value else "defaults"
    return compact(value)


def compact(value: Any) -> str:
    """A setting in one line: lists comma-joined, mappings as ``key: value`` pairs."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {compact(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(compact(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def split_text(config: dict) -> str:
    """How the data was split, from the preset's ``data`` keys."""
    data = config.get("preset_values", {}).get("data", {}) or {}
    if data.get("split") == "official":
        return "the dataset's official train/test lists (patient-disjoint), validation patients drawn from training"
    return (f"patient-wise, validation {data.get('val_frac', 0.1):g} and test {data.get('test_frac', 0.2):g} of the "
            f"patients (split seed {data.get('seed', 0)})")


def seeds_text(config: dict) -> str:
    """The number of seeds per regime, and which they are where they are not 0 to k-1 (``--seed-list``)."""
    k, listed = int(config["seeds"]), list(config.get("seed_list") or range(int(config["seeds"])))
    return str(k) if listed == list(range(k)) else f"{k} (seeds {', '.join(map(str, listed))})"


def config_table(config: dict) -> pd.DataFrame:
    """The trimmed configuration: one row per setting that changes results, the analyses' settings, the software."""
    rows = [("data", config["data"]), ("split", split_text(config)), ("preset", f"`{config['preset']}`"),
            ("regimes", ", ".join(f"`{r}`" for r in config["regimes"])), ("seeds per regime", seeds_text(config))]
    train = dict(config.get("train") or {})
    rows += [(TRAIN_LABELS[k], _train_value(k, train.pop(k))) for k in TRAIN_LABELS if k in train]
    rows += [(k.replace("_", " "), compact(v)) for k, v in train.items()]
    rows += [("device", config.get("device") or "-"), ("bootstrap resamples", config["bootstrap"]),
             ("metrics", ", ".join(config.get("metrics") or ["auc"])),
             ("primary comparison", f"{config.get('primary', 'macro')} AUC"),
             ("planning difference", compact(config.get("detect", "-")))]
    rows += [(k.replace("_", " "), compact(v)) for k, v in config.items() if k not in SHOWN]
    versions = config.get("versions") or {}
    rows.append(("software", ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"))
    return pd.DataFrame(rows, columns=["setting", "value"]).astype(str)


def step_text(step: Any) -> str:
    """A transform as ``Name(arg=value, ...)``: ``keys`` left out, nested objects by their class name."""
    if not isinstance(step, dict):
        return str(step)
    name = str(step.get("_target_", "?")).rsplit(".", 1)[-1]
    args = [f"{k}={_arg(v)}" for k, v in step.items() if k not in ("_target_", "keys")]
    return f"{name}({', '.join(args)})"


def _arg(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("_target_", "?")).rsplit(".", 1)[-1] if "_target_" in value else compact(value)
    if isinstance(value, (list, tuple)):
        return f" {TIMES} ".join(_arg(v) for v in value) if all(isinstance(v, (int, float)) for v in value) \
            else "[" + ", ".join(_arg(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def regime_lines(specs: dict[str, dict | None]) -> list[str]:
    """The loading steps (once where every regime shares them) and a table: each regime's description and its
    deterministic and random transforms."""
    specs = {r: s or {} for r, s in specs.items()}
    loads = {r: " → ".join(step_text(t) for t in s.get("load", [])) for r, s in specs.items()}
    shared = len(set(loads.values())) == 1
    rows = []
    for regime, spec in specs.items():
        row = {"regime": f"`{regime}`", "description": " ".join(str(spec.get("description", "")).split())}
        if not shared:
            row["loading"] = loads[regime]
        row["deterministic"] = "; ".join(step_text(t) for t in spec.get("deterministic", [])) or "-"
        row["random"] = "; ".join(step_text(t) for t in spec.get("random", [])) or "-"
        rows.append(row)
    head = [f"Every regime loads each image by {next(iter(loads.values()))}, then:", ""] if shared and loads else []
    return [*head, markdown_table(pd.DataFrame(rows), "{}"), ""]


def duration_text(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 04 min``; ``-`` when unknown."""
    if seconds is None or seconds != seconds:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def cost_table(costs: Sequence[dict]) -> pd.DataFrame:
    """Per run: its device and training wall time (``costs``: run, device, seconds, epochs, resumed), and the total."""
    rows = [{"run": f"`{c['run']}`", "device": c.get("device") or "-", "epochs": c.get("epochs", "-"),
             "training wall time": duration_text(c.get("seconds"))
             + (" (the last session: it was resumed)" if c.get("resumed") else "")} for c in costs]
    known = [c["seconds"] for c in costs if c.get("seconds") is not None]
    if known:
        rows.append({"run": "all runs", "device": "", "epochs": "",
                     "training wall time": duration_text(sum(known))
                     + (f" ({len(known)} of {len(costs)} runs timed)" if len(known) < len(costs) else "")})
    return pd.DataFrame(rows)


def _weights(pretrained: Any) -> str:
    """How the network was initialised, in words."""
    if str(pretrained) == "none":
        return "trained from scratch"
    return "ImageNet weights" if str(pretrained) == "imagenet" else f"initialised from {PurePath(str(pretrained)).name}"


def methods_paragraph(config: dict, sizes: pd.DataFrame, baseline: str) -> str:
    """A short methods paragraph generated from the configuration and the split (``split_table``'s columns)."""
    train, seeds, regimes = config.get("train") or {}, int(config["seeds"]), list(config["regimes"])
    steps = train.get("steps_per_epoch")
    schedule = (f"{plural(int(train.get('epochs', 0)), 'epoch')} {TIMES} {steps} steps" if steps
                else f"{plural(int(train.get('epochs', 0)), 'epoch')} of one pass each")
    split = ", ".join(f"{int(sizes.loc['patients', s])} {s} patients ({int(sizes.loc['images', s])} images)"
                      for s in sizes.columns)
    metrics = [m for m in config.get("metrics") or [] if m != "auc"]
    versions = config.get("versions") or {}
    software = ", ".join(f"{k} {versions[k]}" for k in ("mai_aug", "monai", "torch") if k in versions)
    data = f"Data: {config['data']}, split {split_text(config)}: {split}."
    if not train:  # a configuration without the runs' settings (not a compare study)
        return data
    return (f"{data} A {train.get('network', 'network')} "
            f"({_weights(train.get('pretrained', 'none'))}; {train.get('in_channels', 1)}-channel input of {_train_value('image_size', train.get('image_size'))})"
            f" was trained for {schedule} (batch {train.get('batch_size')}, learning rate "
            f"{compact(train.get('lr'))}, weight decay {compact(train.get('weight_decay', 0.0))}, "
            f"{_train_value('weighted_loss', train.get('weighted_loss', True))}) under each of "
            f"{plural(len(regimes), 'augmentation regime')} ({', '.join(f'`{r}`' for r in regimes)}), "
            f"{plural(seeds, 'seed')} each: {plural(len(regimes) * seeds, 'run')} on {config.get('device') or '-'}, "
            f"the checkpoint of best validation macro AUC kept. Each finding's test ROC AUC"
            f"{' (and ' + ', '.join(metrics) + ')' if metrics else ''} has a 95% interval from "
            f"{config['bootstrap']} bootstrap resamples of the test patients, the same for every regime"
            f"{' and seed, with the seed variance added' if seeds > 1 else ''}; the "
            f"primary comparison is each regime's {config.get('primary', 'macro')} AUC against `{baseline}`, paired "
            f"by patient. Software: {software or '-'}.")
