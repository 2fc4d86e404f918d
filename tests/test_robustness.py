"""``mai-aug robustness``: graded test-time shifts of a tiny trained run (32 px, one short epoch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mai_aug.analyses.robustness.run import read_sweep
from mai_aug.cli import main
from mai_aug.data.nih import FINDINGS
from mai_aug.transforms.shift_levels import SHIFT_TYPES, parse_levels
from mai_aug.transforms.shifts import build_batch_shift, build_shift, noise_seed

#: 32 px and a small DenseNet (MONAI's class, a fraction of DenseNet121's cost): the sweeps are about the shifts and
#: the evaluation, not the network
TINY = ["--image-size", "32", "--batch-size", "16", "--workers", "0", "--quiet", "--lr", "1e-3", "--network", "densenet",
        "--network-args", "{init_features: 8, growth_rate: 4, block_config: [2, 2]}"]
#: one level besides the identity per shift type: cheap, and each changes the image
LEVELS = ["rotation=10", "zoom=1.1", "gamma=1.5", "noise=0.3", "blur=1", "translation=0.05"]


@pytest.fixture(scope="module")
def site_phantom(tmp_path_factory) -> Path:
    """The session phantom's twin (same seed, n and size) whose test patients were imaged at a shifted site."""
    from mai_aug.data.phantom import PhantomSpec, write_phantom

    out = tmp_path_factory.mktemp("site")
    write_phantom(PhantomSpec(out=out, n=900, size=64, seed=3, test_shift="site"), workers=2)
    return out


@pytest.fixture(scope="module")
def run(phantom_dir, tmp_path_factory) -> Path:
    """A run trained on the phantom's official lists (its test patients are the site phantom's shifted ones)."""
    folder = tmp_path_factory.mktemp("rob")
    assert main(["split", "--data", str(phantom_dir), "--split", "official", "--out", str(folder / "full.json")]) == 0
    datalist = json.loads((folder / "full.json").read_text())
    datalist.update(training=datalist["training"][:64], validation=datalist["validation"][:16],
                    test=datalist["test"][:120])
    (folder / "datalist.json").write_text(json.dumps(datalist))
    out = folder / "run"
    assert main(["train", "--datalist", str(folder / "datalist.json"), "--regime", "basic", "--out", str(out),
                 "--epochs", "1", "--steps-per-epoch", "2", *TINY]) == 0
    return out


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(FINDINGS)].to_numpy(float)


def test_every_output_and_identity_level_reproduces_evaluate(run, site_phantom):
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200"]) == 0
    assert main(["robustness", "--run", str(run), "--bootstrap", "200", "--levels", *LEVELS,
                 "--site-data", str(site_phantom)]) == 0
    out = run / "robustness"
    shifts = [*SHIFT_TYPES, "site"]
    for name in shifts:
        assert (out / f"{name}.png").stat().st_size > 10_000
    meta = json.loads((out / "meta.json").read_text())
    assert meta["checkpoint"] == "best.pt" and meta["levels"]["rotation"] == [0.0, 10.0]
    table = pd.read_csv(out / "table.csv")
    assert list(dict.fromkeys(table["shift"])) == shifts
    assert (table.groupby(["shift", "level"]).size() == len(FINDINGS) + 1).all()  # every finding and macro
    ok = table["ci_low"].notna()
    assert ok.any() and ((table.loc[ok, "ci_low"] <= table.loc[ok, "auc"])
                         & (table.loc[ok, "auc"] <= table.loc[ok, "ci_high"])).all()
    evaluated = pd.read_csv(run / "eval" / "test_auc.csv")
    predictions = read_sweep(out / "predictions.npz")
    reference = pd.read_csv(run / "eval" / "test_predictions.csv")
    for name, kind in [*((s, SHIFT_TYPES[s]) for s in SHIFT_TYPES), ("site", None)]:
        identity = 0.0 if kind is None else kind.identity
        rows = table[(table["shift"] == name) & (table["level"] == identity)].drop(columns=["shift", "level"])
        pd.testing.assert_frame_equal(rows.reset_index(drop=True), evaluated, check_exact=False, rtol=1e-9)
        at = predictions[predictions["shift"] == name]
        same = at[at["level"] == identity].reset_index(drop=True)
        # the same predictions: evaluate's CSV keeps 12 significant digits of them, the sweep's arrays all
        assert np.abs(probabilities(same) - probabilities(reference)).max() < 1e-11
        assert same["image"].tolist() == reference["image"].tolist()
        shifted = probabilities(at[at["level"] != identity])
        assert shifted.shape == probabilities(reference).shape
        assert np.abs(shifted - probabilities(reference)).max() > 1e-4, name  # each shift changes the predictions


def test_identical_runs_give_identical_sweeps(run, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(run, twin, ignore=shutil.ignore_patterns("robustness", "eval"))
    levels = ["noise=0.1,0.3", "rotation=10"]
    assert main(["robustness", "--run", str(run), "--bootstrap", "200", "--shifts", "noise", "rotation",
                 "--levels", *levels]) == 0
    torch.manual_seed(123)  # the noise must not come from the global generators
    np.random.seed(123)
    assert main(["robustness", "--run", str(twin), "--bootstrap", "200", "--shifts", "rotation", "noise",
                 "--levels", *levels, "--workers", "1"]) == 0
    ours, theirs = (pd.read_csv(r / "robustness" / "table.csv") for r in (run, twin))
    order = ["shift", "level", "finding"]
    pd.testing.assert_frame_equal(ours.sort_values(order).reset_index(drop=True),
                                  theirs.sort_values(order).reset_index(drop=True))
    ours, theirs = (read_sweep(r / "robustness" / "predictions.npz") for r in (run, twin))
    key = ["shift", "level", "patient"]
    assert np.array_equal(probabilities(ours.sort_values(key, kind="stable")),
                          probabilities(theirs.sort_values(key, kind="stable")))


def test_shift_transforms():
    image = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, kind in SHIFT_TYPES.items():
        assert build_shift(name, kind.identity) is None
        level = [v for v in kind.levels if v != kind.identity][-1]
        shifted = build_shift(name, level)(image, 0)
        assert type(shifted) is torch.Tensor and shifted.dtype == torch.float32 and shifted.shape == image.shape
        assert not torch.equal(shifted, image), name
    dot = torch.zeros(1, 33, 33)
    dot[0, 4, 16] = 1  # above the centre
    for name, level, where in (("rotation", 90, [16, 28]), ("translation", 4 / 33, [8, 20])):
        moved = build_shift(name, level)(dot, 0)[0]
        assert (moved == moved.max()).nonzero().tolist() == [where], name  # clockwise as displayed; down and right
    noise = build_shift("noise", 0.2)
    assert torch.equal(noise(image, 3), noise(image, 3)) and not torch.equal(noise(image, 3), noise(image, 4))
    assert noise_seed(0.2, 3) != noise_seed(0.4, 3)
    residual = noise(image, 3) - image
    assert 0.15 < float(residual.std() / image.std()) < 0.25  # the level is the noise SD over the image's SD


@pytest.mark.parametrize("name", list(SHIFT_TYPES))
def test_each_batched_shift_equals_the_per_image_monai_shift(name):
    """The sweep's batched shift (one call for the batch) gives each image what the per-image MONAI shift gives it,
    within 1e-5 (float32 rounding of the same operations), every level; noise keeps each image's own seeded draw."""
    images = torch.rand(5, 1, 40, 40, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.5, 1.5, 5)[:, None,
                                                                                                        None, None]
    indices = torch.tensor([7, 0, 3, 12, 5])
    for level in SHIFT_TYPES[name].levels:
        batched, single = build_batch_shift(name, level), build_shift(name, level)
        if single is None:
            assert batched is None
            continue
        expected = torch.stack([single(img, int(i)) for img, i in zip(images, indices)])
        assert torch.allclose(batched(images, indices), expected, atol=1e-5, rtol=0), (name, level)


def test_levels_add_the_identity_and_refuse_bad_values():
    assert parse_levels(["zoom=1.1,0.9"], ["zoom", "blur"]) == {"zoom": [0.9, 1.0, 1.1], "blur": [0, 0.5, 1.0, 1.5, 2.0]}
    for entry, says in (("rotation=abc", "with numbers"), ("zoom=0", "in [0.25, 4]"), ("blur=1", "not among"),
                        ("noise=", "in [0, 10]")):
        with pytest.raises(Exception, match=says.replace("[", r"\[")):
            parse_levels([entry], ["rotation", "zoom", "noise"])


def test_bad_input_is_one_line(run, phantom_dir, capsys):
    assert main(["robustness", "--run", str(run), "--shifts", "rotation", "--levels", "zoom=1.1"]) == 2
    assert "not among the chosen shifts" in capsys.readouterr().err
    assert main(["robustness", "--run", str(run), "--site-data", str(phantom_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a phantom made with --test-shift site" in err


@pytest.fixture(scope="module")
def complex_run(run) -> Path:
    """A run of the same tiny datalist under ``complex`` (a random rotation, zoom and shear)."""
    out = run.parent / "complex"
    assert main(["train", "--datalist", str(run.parent / "datalist.json"), "--regime", "complex", "--out", str(out),
                 "--epochs", "1", "--steps-per-epoch", "2", *TINY]) == 0
    return out


def test_tta_averages_draws_of_the_random_part(complex_run, capsys):
    from mai_aug.analyses.evaluate.run import evaluate_run
    from mai_aug.analyses.trained_run import TrainedRun
    from mai_aug.analyses.tta.run import tta_predictions

    assert main(["evaluate", "--run", str(complex_run), "--bootstrap", "200", "--tta", "2"]) == 0
    assert "tta2" in capsys.readouterr().out
    table = pd.read_csv(complex_run / "eval" / "test_tta.csv")
    assert set(table["prediction"]) == {"plain", "tta2"} and (table["finding"] == "macro").sum() == 2
    plain = table[table["prediction"] == "plain"].set_index("finding")["auc"]
    evaluated = pd.read_csv(complex_run / "eval" / "test_auc.csv").set_index("finding")["auc"]
    assert np.allclose(plain, evaluated.loc[plain.index], equal_nan=True)  # "without" is evaluate's AUC
    averaged = probabilities(pd.read_csv(complex_run / "eval" / "test_tta_predictions.csv"))
    reference = probabilities(pd.read_csv(complex_run / "eval" / "test_predictions.csv"))
    assert np.abs(averaged - reference).max() > 1e-4
    trained = TrainedRun(complex_run, device="cpu")
    items = trained.datalist["test"]
    draws = [tta_predictions(trained, items, 1, workers=w) for w in (0, 1)]  # draw 0, in-process and in a worker
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], reference)
    two = tta_predictions(trained, items, 2)
    assert np.allclose(averaged, two)  # the average of draws 0 and 1, as evaluate wrote it
    assert not np.allclose(2 * two - draws[0], draws[0])  # draw 1 is another draw
    assert json.loads((complex_run / "eval" / "test_meta.json").read_text())["tta"] == 2
    evaluate_run(complex_run, n_boot=200)  # without --tta: no stale TTA files left to be read as current
    assert not (complex_run / "eval" / "test_tta.csv").exists()


def test_tta_runs_batched_on_the_device_as_the_run_trained(complex_run):
    """complex trained on the device path (augment_on auto): TTA draws there, in batches of TTA_BATCH whatever the
    run's batch size; with the random part's probabilities at 0 the batched pass reproduces evaluate's input (one
    identity resampling: within 1e-5); a run trained on the loader path draws per image in the loader."""
    from mai_aug.analyses.trained_run import TrainedRun
    from mai_aug.analyses.tta import run as tta

    trained = TrainedRun(complex_run, device="cpu")
    items = trained.datalist["test"]
    assert trained.config.augment_on == "auto"
    device = tta.tta_predictions(trained, items, 1)
    trained.config.batch_size = 3  # the run's own batch size does not change the draws
    assert np.array_equal(tta.tta_predictions(trained, items, 1), device)
    trained.config.augment_on = "loader"
    loader = tta.tta_predictions(trained, items, 1)
    assert not np.allclose(loader, device)  # the other path: other draws (both are draws of the same transforms)
    trained.config.augment_on = "auto"
    for transform in trained.regime.random:
        transform.prob = 0.0
    plain = trained.predict(items)
    assert np.abs(tta.tta_predictions(trained, items, 2) - plain).max() < 1e-5


def test_tta_of_a_regime_without_random_part_is_the_plain_prediction(run):
    assert main(["evaluate", "--run", str(run), "--bootstrap", "200", "--tta", "3"]) == 0
    averaged = probabilities(pd.read_csv(run / "eval" / "test_tta_predictions.csv"))
    assert np.array_equal(averaged, probabilities(pd.read_csv(run / "eval" / "test_predictions.csv")))
    table = pd.read_csv(run / "eval" / "test_tta.csv")
    assert (table["diff_vs_plain"].dropna() == 0).all()


def test_a_shift_type_without_its_builder_fails_at_import(monkeypatch):
    import importlib

    import mai_aug.transforms.shift_levels as shift_levels
    import mai_aug.transforms.shifts as shifts

    fog = shift_levels.ShiftType("fog", (0.0, 1.0), 0.0, 0.0, 1.0, "fog density")
    monkeypatch.setitem(shift_levels.SHIFT_TYPES, "fog", fog)
    try:
        with pytest.raises(ImportError, match="fog"):
            importlib.reload(shifts)
    finally:
        monkeypatch.undo()
        importlib.reload(shifts)
    assert set(shifts.BUILDERS) == set(shift_levels.SHIFT_TYPES)
