"""The run and study folder layouts, the one inference path and the one construction of a run's interval tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mai_aug.core.layout import RunLayout, StudyLayout
from mai_aug.engine.inference import PrepareBatch, make_evaluator, predict_probabilities
from mai_aug.stats.auc import auc_table
from mai_aug.stats.scores import interval_tables, metric_table, resolve_metrics


def test_run_layout_spells_the_documented_names(tmp_path):
    run = RunLayout(tmp_path)
    expected = {run.config: "config.yaml", run.fingerprint: "fingerprint.json", run.datalist: "datalist.json",
                run.metrics: "metrics.csv", run.log: "train.log", run.lock: ".lock", run.done: "DONE",
                run.best: "checkpoints/best.pt", run.tensorboard: "tensorboard",
                run.auc("test"): "eval/test_auc.csv", run.metric("test", "sens_at_spec0.9"): "eval/test_sens_at_spec0.9.csv",
                run.predictions("validation"): "eval/validation_predictions.csv", run.meta("test"): "eval/test_meta.json",
                run.roc("test"): "eval/test_roc.png", run.eval_log: "eval/evaluate.log",
                run.calibration: "calibration.json", run.calibration_ece("test"): "eval/test_calibration.csv"}
    for path, name in expected.items():
        assert path == tmp_path / name


def test_run_layout_last_is_the_newest_checkpoint(tmp_path):
    run = RunLayout(tmp_path)
    assert run.last is None
    run.checkpoints.mkdir()
    for name in ("last_checkpoint_epoch=2.pt", "last_checkpoint_epoch=3_iteration=7.pt", "best.pt", "other.pt"):
        (run.checkpoints / name).write_bytes(b"x")
    assert run.last == tmp_path / "checkpoints" / "last_checkpoint_epoch=3_iteration=7.pt"


def test_study_layout_finds_run_folders_and_names_their_logs(tmp_path):
    study = StudyLayout(tmp_path)
    for folder in ("none/seed-1", "basic/seed-0", "basic/seed-x", "basic/notes"):
        (tmp_path / folder).mkdir(parents=True)
    assert [(r, k) for r, k, _ in study.run_dirs()] == [("basic", 0), ("none", 1)]
    assert study.run_dir("basic", 0) == study.run("basic", 0).root == tmp_path / "basic" / "seed-0"
    assert StudyLayout.label("basic", 0) == "basic/seed-0" and StudyLayout.seed_of(study.run_dir("none", 1)) == "1"
    assert study.run_tensorboard("basic", 0) == tmp_path / "tensorboard" / "basic-seed0"
    assert study.run_tensorboard("basic", 0, root=tmp_path / "aside") == tmp_path / "aside" / "basic-seed0"
    assert [p.name for p in (study.datalist, study.report, study.summary, study.config, study.replaced)] == [
        "datalist.json", "report.md", "summary.csv", "compare_config.yaml", "replaced"]


class _Tiny(torch.nn.Module):
    """Global mean of each channel, then a linear layer: enough to tell channels and batches apart."""

    def __init__(self, in_channels: int, outputs: int = 3) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_channels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean((2, 3)))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_predict_probabilities_is_the_evaluators_sigmoid_in_float64(in_channels):
    torch.manual_seed(0)
    net = _Tiny(in_channels).eval()
    images = torch.rand(7, 1, 8, 8) * 40
    items = [{"image": images[i], "label": torch.zeros(3)} for i in range(7)]
    loader = torch.utils.data.DataLoader(items, batch_size=3)
    probs = predict_probabilities(net, loader, torch.device("cpu"), False, in_channels, 3)
    with torch.no_grad():  # the loop evaluate and predict ran before the evaluator: batch by batch, float64 sigmoid
        expected = torch.cat([torch.sigmoid(net(batch["image"].expand(-1, in_channels, -1, -1)).double())
                              for batch in loader])
    np.testing.assert_array_equal(probs, expected.numpy())
    assert probs.dtype == np.float64 and probs.shape == (7, 3)
    empty = torch.utils.data.DataLoader([], batch_size=3)
    assert predict_probabilities(net, empty, torch.device("cpu"), False, in_channels, 3).shape == (0, 3)


def test_evaluator_prepares_batches_as_validation_does():
    evaluator = make_evaluator(_Tiny(3), [], torch.device("cpu"), False, 3)
    assert isinstance(evaluator.prepare_batch, PrepareBatch) and evaluator.prepare_batch.stage is None
    assert evaluator.prepare_batch.in_channels == 3 and not evaluator.amp and not evaluator.non_blocking


@pytest.mark.parametrize("unknown", [False, True])
def test_interval_tables_give_the_auc_table(unknown):
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(30), 2)
    labels = (rng.random((60, 2)) < 0.4).astype(np.float64)
    probs = np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1)
    if unknown:
        labels[::7, 1] = np.nan
    metrics = resolve_metrics(["ap"])
    tables = interval_tables(metrics, labels, probs, patients, ["A", "B"], n_boot=200, seed=3)
    assert list(tables) == ["auc", "ap"]
    pd.testing.assert_frame_equal(tables["auc"], auc_table(labels, probs, patients, ["A", "B"], n_boot=200, seed=3))
    pd.testing.assert_frame_equal(tables["ap"], metric_table(metrics[1], labels, probs, patients, ["A", "B"],
                                                             n_boot=200, seed=3))


def test_no_module_spells_run_folder_names():
    """The names live in engine/layout.py alone (docstrings and messages aside)."""
    package = Path(__file__).resolve().parent.parent / "mai_aug"
    literals = ('"checkpoints"', '"eval"', '"config.yaml"', '"metrics.csv"', '"train.log"', '"best.pt"',
                '"datalist.json"', '"seed-', '"report.md"', '"summary.csv"', '"tensorboard"', '".lock"',
                '/ "robustness"', '/ "saliency"', '"tta.csv"', '"tta_predictions.csv"', '"calibration.json"',
                '"calibration.csv"')
    found = [f"{path.relative_to(package)}: {lit}" for path in package.rglob("*.py") if path.name != "layout.py"
             for lit in literals if lit in path.read_text()]
    assert not found
