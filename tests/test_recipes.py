"""The recipes of docs/recipes.md: a custom network, metric and dataset adapter is one new file plus one entry in a
settings YAML.

Each test writes the recipe's file and YAML exactly as docs/recipes.md shows them (read from its code blocks), runs
``mai-aug train`` (tiny) and checks that the component was used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import cut_datalist
from mai_aug.cli import main

TINY = ["--image-size", "32", "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "2", "--workers", "0",
        "--quiet"]
SUBSET = {"training": 16, "validation": 8, "test": 8}

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def _blocks() -> list[str]:
    """The code blocks of docs/recipes.md in order: per recipe its Python file, then its settings.yaml."""
    blocks = re.findall(r"^```(python|yaml)\n(.*?)^```$", RECIPES.read_text(), flags=re.S | re.M)
    assert [kind for kind, _ in blocks] == ["python", "yaml"] * 3, "docs/recipes.md: a python and a yaml block each"
    return [code for _, code in blocks]


MY_NETS, NET_YAML, MY_METRICS, METRIC_YAML, MY_ADAPTER, DATASET_YAML = _blocks()


def _recipe(folder: Path, module: str, code: str, settings: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the recipe's one new file (importable, as with PYTHONPATH=.) and its settings YAML."""
    (folder / f"{module}.py").write_text(code)
    monkeypatch.syspath_prepend(str(folder))
    (folder / "settings.yaml").write_text(settings)
    return folder / "settings.yaml"


def test_network_recipe(tmp_path, phantom_dir, monkeypatch, capsys):
    settings = _recipe(tmp_path, "my_nets", MY_NETS, NET_YAML, monkeypatch)
    datalist = cut_datalist(phantom_dir, tmp_path, **SUBSET)
    args = ["train", "--settings", str(settings), "--datalist", str(datalist), "--out", str(tmp_path / "run"), *TINY]
    assert main(args) == 2  # a _target_ outside MONAI is code: refused in one line without --trust-config
    err = capsys.readouterr().err.strip()
    assert "my_nets.TinyNet" in err and "--trust-config" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()

    assert main([*args, "--trust-config"]) == 0
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["network"] == "my_nets.TinyNet" and config["network_args"] == {"out_channels": 14}
    assert config["resolved"]["network"]["target"] == "my_nets.TinyNet"
    assert config["resolved"]["network"]["family"] == "custom"
    assert config["resolved"]["sources"]["network"] == "file"
    assert config["resolved"]["sources"]["image_size"] == "cli"
    assert config["resolved"]["sources"]["lr"] == "default"
    assert (tmp_path / "run" / "metrics.csv").is_file()


def test_metric_recipe(tmp_path, phantom_dir, monkeypatch, capsys):
    settings = _recipe(tmp_path, "my_metrics", MY_METRICS, METRIC_YAML, monkeypatch)
    datalist = cut_datalist(phantom_dir, tmp_path, **SUBSET)
    run = tmp_path / "run"
    assert main(["train", "--settings", str(settings), "--datalist", str(datalist), "--out", str(run),
                 "--network", "resnet18", "--trust-config", *TINY]) == 0
    logged = pd.read_csv(run / "metrics.csv")
    assert "brier_macro" in logged.columns and np.isfinite(logged["brier_macro"]).all()

    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 2  # the run's stored metric is code too
    assert "--trust-config" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200", "--trust-config"]) == 0
    table = pd.read_csv(run / "eval" / "test_brier.csv").set_index("finding")
    predictions = pd.read_csv(run / "eval" / "test_predictions.csv")
    finding = table.index[0]
    expected = np.mean((predictions[finding] - predictions[f"true_{finding}"]) ** 2)
    assert table.loc[finding, "brier"] == pytest.approx(expected, rel=1e-6)


def test_dataset_recipe(tmp_path, phantom_dir, monkeypatch):
    settings = _recipe(tmp_path, "my_adapter", MY_ADAPTER, DATASET_YAML, monkeypatch)
    entries = pd.read_csv(phantom_dir / "Data_Entry_2017_v2020.csv").head(60)
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame({
        "file": [str(phantom_dir / "images" / name) for name in entries["Image Index"]],
        "patient": entries["Patient ID"],
        **{f: entries["Finding Labels"].str.contains(f).astype(int) for f in ("Effusion", "Cardiomegaly")},
    }).to_csv(folder / "labels.tsv", sep="\t", index=False)
    run = tmp_path / "run"
    assert main(["train", "--settings", str(settings), "--data", str(folder), "--out", str(run), "--trust-config",
                 *TINY]) == 0
    datalist = json.loads((run / "datalist.json").read_text())
    assert datalist["labels"] == ["Effusion", "Cardiomegaly"]
    assert sum(len(datalist[k]) for k in ("training", "validation", "test")) == 60
    assert {"Effusion", "Cardiomegaly"} <= set(pd.read_csv(run / "metrics.csv").columns)

