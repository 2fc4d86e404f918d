"""Honest statistics of `mai-aug compare`: seed variance in every interval, familywise error control, the null case."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mai_aug.analyses.outputs import load_predictions
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.reports.roc import roc_figure
from mai_aug.stats.auc import per_finding_auc
from mai_aug.stats.paired import score_regimes, summary_table
from mai_aug.study.report import MEASURED, statistics_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from stats_calibration import Setting, run_setting  # noqa: E402  (the benchmark's simulator, also tested here)

NOISE = """regimes:
  noise:
    deterministic: "%regimes#none#deterministic"
    random:
      - {_target_: RandGaussianNoised, keys: image, prob: 1.0, std: 0.001}
"""


def simulated_study(rng: np.random.Generator, effect: float = 0.0, seeds: int = 3, patients: int = 80,
                    findings: int = 2, seed_sd: float = 0.3) -> tuple[np.ndarray, np.ndarray, dict]:
    """Two images per patient; each seed of each regime gets its own discriminability (seed variance)."""
    labels = np.repeat((rng.random((patients, findings)) < 0.3).astype(int), 2, axis=0)
    difficulty = rng.normal(0, 1, labels.shape)  # shared by all runs: makes the comparison paired
    preds = {regime: [labels * (1 + shift + seed_sd * rng.normal(0, 1, findings)) + difficulty
                      + rng.normal(0, 0.5, labels.shape) for _ in range(seeds)]
             for regime, shift in (("none", 0.0), ("new", effect))}
    return labels, np.repeat(np.arange(patients), 2), preds


def patient_only_star(scores) -> bool:
    """The method before seed variance: seed-averaged patient bootstrap, percentile interval per finding, no correction."""
    diff = scores.boot["new"].mean(0) - scores.boot["none"].mean(0)
    low, high = np.quantile(diff, [0.025, 0.975], axis=0)
    return bool(((low > 0) | (high < 0)).any())


def calibration(setting: Setting, studies: int) -> dict[str, float]:
    """benchmarks/stats_calibration.py's outcomes of ``studies`` simulated studies (14 findings, 3 regimes)."""
    return run_setting(setting, studies)


def test_familywise_rates_and_primary_coverage_at_14_findings_with_shared_seed_effects():
    """The fast version of benchmarks/stats_calibration.py: 14 findings, 3 regimes, 3 seeds, seed effects shared by
    the findings, 100 test patients. Each family's rate of any false star
    stays at most 7% and the primary's marginal interval covers the true difference in at least 93% of comparisons
    (60 null studies: binomial SE 2.8 points)."""
    null = calibration(Setting(3, "shared", 0.0, patients=100, n_boot=100), 60)
    assert null["primary_any_star"] <= 0.07 and null["finding_any_star"] <= 0.07
    assert null["primary_coverage"] >= 0.93


@pytest.mark.parametrize("seeds", [3, 5])
def test_with_no_seed_variance_more_seeds_are_not_less_powerful(seeds):
    """The seeds' spread that is only each run's own test-set noise is not counted twice: 3 or 5 seeds' primary
    (which covers the seeds too) is at least as powerful as one seed's (patients only), and both cover."""
    one = calibration(Setting(1, "none", 0.02, patients=100, n_boot=100), 30)
    more = calibration(Setting(seeds, "none", 0.02, patients=100, n_boot=100), 30)
    assert more["primary_power"] >= one["primary_power"], (more, one)
    assert min(one["primary_coverage"], more["primary_coverage"]) >= 0.9


def test_familywise_false_star_rate_under_a_null_with_seed_variance():
    """400 small null studies with large seed variance, 3 seeds: each family's rate of any false star stays at most
    6%; the former patients-only percentile intervals star most of them."""
    rng = np.random.default_rng(0)
    stars = {"primary": 0, "secondary": 0}
    old = 0
    studies = 400
    for i in range(studies):
        labels, patients, preds = simulated_study(rng)
        scores = score_regimes(labels, patients, preds, n_boot=200, seed=i)
        table = summary_table(scores, ["A", "B"], baseline="none")
        for family in stars:
            stars[family] += table[table["family"] == family]["ci_excludes_0"].any()
        old += patient_only_star(scores)
    assert max(stars.values()) / studies <= 0.06, stars
    assert old / studies >= 0.5


def test_planted_difference_is_found_with_three_seeds():
    rng = np.random.default_rng(1)
    labels = np.repeat((rng.random((200, 3)) < 0.3).astype(int), 2, axis=0)
    patients = np.repeat(np.arange(200), 2)
    difficulty = rng.normal(0, 1, labels.shape)

    def run(signal: list[float]) -> np.ndarray:  # each seed: its own signal strength and its own image noise
        return labels * np.multiply(signal, 1 + 0.1 * rng.normal(0, 1, 3)) + difficulty + rng.normal(0, 0.3, labels.shape)

    preds = {"none": [run([1.5, 1.5, 0.0]) for _ in range(3)], "good": [run([1.5, 1.5, 1.5]) for _ in range(3)]}
    summary = summary_table(score_regimes(labels, patients, preds, n_boot=300), ["A", "B", "C"], baseline="none")
    good = summary[summary["regime"] == "good"].set_index("finding")
    assert good.loc["C", "ci_excludes_0"] and good.loc["C", "diff_ci_low"] > 0  # finding C: noise -> informative
    assert not good.loc[["A", "B"], "ci_excludes_0"].any()
    assert good.loc["macro", "ci_excludes_0"] and good.loc["macro", "family"] == "primary"
    assert good.loc["macro", "family_size"] == 1 and good.loc["C", "family_size"] == 3
    assert (good["diff_ci_low"] >= -1).all() and (good["diff_ci_high"] <= 1).all()


def test_two_seeds_show_a_large_difference_without_a_star():
    """2 seeds: intervals that exclude 0 for a large difference, but no star in either family (too few degrees of
    freedom for a 5% claim), and the report says why; the same study's first seed alone stars it."""
    rng = np.random.default_rng(4)
    labels, patients, preds = simulated_study(rng, effect=2.0, seeds=2, patients=150, seed_sd=0.05)
    summary = summary_table(score_regimes(labels, patients, preds, n_boot=200), ["A", "B"], baseline="none")
    new = summary[summary["regime"] == "new"].set_index("finding")
    assert new.loc["macro", "diff_ci_low"] > 0 and (new.loc[["A", "B"], "diff_ci_low"] > 0).all()
    assert not new["ci_excludes_0"].any()
    md = "\n".join(statistics_text(summary, 2, 200, "none"))
    assert "With 2 seeds no difference is starred" in md and "5 or more seeds are advised" in md
    one = summary_table(score_regimes(labels, patients, {r: p[:1] for r, p in preds.items()}, n_boot=200), ["A", "B"],
                        baseline="none")
    assert one[(one["regime"] == "new") & (one["finding"] == "macro")]["ci_excludes_0"].all()


def test_auc_intervals_stay_inside_0_1_without_clipping_near_the_edge():
    from mai_aug.stats.seeds import logit_interval

    low, high = logit_interval(np.array([0.97, 0.5]), np.array([0.03, 0.05]), 1.96)
    assert 0 < low[0] < 0.97 < high[0] < 1  # symmetric would reach 1.029 and be clipped
    assert (0.97 - low[0]) > (high[0] - 0.97)  # asymmetric near the edge
    assert low[1] == pytest.approx(0.5 - 1.96 * 0.05, abs=0.003) and high[1] == pytest.approx(1 - low[1])


def test_seed_variance_is_net_of_each_runs_test_noise():
    """Seeds that differ only by their own per-image noise: the pooled seed variance is about 0, so five seeds'
    interval is narrower than one seed's; real seed variance is found."""
    from mai_aug.stats.paired import regime_runs
    from mai_aug.stats.seeds import pooled_seed_variance

    rng = np.random.default_rng(2)
    for seed_sd, expect_positive in ((0.0, False), (0.6, True)):
        labels, patients, preds = simulated_study(rng, seeds=5, patients=150, findings=4, seed_sd=seed_sd)
        runs = regime_runs(score_regimes(labels, patients, preds, n_boot=300), "new")
        ratio = pooled_seed_variance(runs.column([1, 2, 3, 4])).ratio
        assert (ratio > 1.0) == expect_positive, ratio
    labels, patients, preds = simulated_study(rng, seeds=5, patients=150, seed_sd=0.0)
    width = {}
    for name, p in (("one", {r: v[:1] for r, v in preds.items()}), ("five", preds)):
        s = summary_table(score_regimes(labels, patients, p, n_boot=200), ["A", "B"], baseline="none")
        row = s[(s["regime"] == "new") & (s["finding"] == "macro")].iloc[0]
        width[name] = row["diff_ci_high"] - row["diff_ci_low"]
    assert width["five"] < width["one"]


def test_planning_counts_seeds_and_patients():
    from mai_aug.stats.planning import patients_needed, seeds_needed

    assert seeds_needed(0.0, 0.01**2, 1.96, 0.01, 0.8) == 8  # (2.80 x 0.01 / sqrt(k))^2 <= 0.01^2 from k = 8
    assert seeds_needed(0.01**2, 0.0, 1.96, 0.01, 0.8) is None  # the test set alone is too noisy
    # SE 0.005 at 200 patients, SE 0.01 / 2.80 needed: 200 x (0.005 x 2.80 / 0.01)^2 = 392.4
    assert patients_needed(200, 0.005**2, 0.0, 1.96, 0.01, 0.8) == 393
    assert patients_needed(200, 0.0, 0.01**2, 1.96, 0.01, 0.8) is None  # the seed variance alone is too large


def test_roc_panels_show_the_table_auc_and_positive_patients():
    rng = np.random.default_rng(3)
    labels, patients, preds = simulated_study(rng, seeds=2, patients=60)
    summary = summary_table(score_regimes(labels, patients, preds, n_boot=50), ["A", "B"], baseline="none")
    fig = roc_figure(labels, preds["new"], ["A", "B"], patients=patients)
    table = summary[summary["regime"] == "new"].set_index("finding")
    for j, f in enumerate(["A", "B"]):  # one panel per finding, counted in the tables' unit and in images
        assert fig.axes[j].get_title() == (f"{f}: AUC {table.loc[f, 'auc']:.3f}\n{int(table.loc[f, 'positive_patients'])}"
                                           f" pos. patients ({int(labels[:, j].sum())} images)")
        assert len(fig.axes[j].collections) == 1 and len(fig.axes[j].lines) == 2  # the seeds' band, mean, diagonal
        assert fig.axes[j].get_legend() is None
    assert "2 seeds: mean curve, band = their range" in fig._suptitle.get_text()
    single = roc_figure(labels, preds["new"][0], ["A", "B"])
    assert not single.axes[0].collections and single.axes[0].get_title().endswith(f"{int(labels[:, 0].sum())} pos. images")
    table = table["auc"]
    assert table["A"] == pytest.approx(np.mean([per_finding_auc(labels, p)[0] for p in preds["new"]]))


def _write_run(out: Path, regime: str, seed: int, frame: pd.DataFrame) -> None:
    (out / regime / f"seed-{seed}" / "eval").mkdir(parents=True)
    frame.to_csv(out / regime / f"seed-{seed}" / "eval" / "test_predictions.csv", index=False)


def test_runs_must_cover_the_same_images_in_the_same_order(tmp_path):
    frame = pd.DataFrame({"image": ["a.png", "b.png", "c.png"], "patient": [1, 1, 2], "A": [0.1, 0.7, 0.3],
                          "true_A": [0, 1, 0]})
    _write_run(tmp_path, "none", 0, frame)
    _write_run(tmp_path, "basic", 0, frame.iloc[[1, 0, 2]])
    with pytest.raises(MaiAugError, match=r"basic/seed-0: its test predictions do not cover the same images"):
        load_predictions(tmp_path, ["none", "basic"], [0], ["A"])
    with pytest.raises(MaiAugError, match=r"complex/seed-0: cannot read"):
        load_predictions(tmp_path, ["none", "complex"], [0], ["A"])
    labels, patients, preds = load_predictions(tmp_path, ["none"], [0], ["A"])
    assert labels[:, 0].tolist() == [0, 1, 0] and patients.tolist() == [1, 1, 2] and len(preds["none"]) == 1


@pytest.fixture(scope="module")
def null_study(phantom_dir, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("null")
    (tmp / "noise.yaml").write_text(NOISE)
    (tmp / "tiny.yaml").write_text(  # the demo's training on a small DenseNet (MONAI's class, a fraction of the cost)
        "data: {split: patient, val_frac: 0.1, test_frac: 0.2, seed: 0}\n"
        "train: {batch_size: 16, lr: 1.0e-3, pretrained: none, in_channels: 1, workers: 0, cache: store,\n"
        "        network: densenet, network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}\n")
    out = tmp / "out"
    assert main(["compare", "--data", str(phantom_dir), "--preset", str(tmp / "tiny.yaml"), "--regimes", "none", "noise",
                 "--regimes-file", str(tmp / "noise.yaml"), "--seeds", "2", "--image-size", "32", "--epochs", "1", "--steps-per-epoch", "3",
                 "--workers", "0", "--bootstrap", "200", "--quiet", "--out", str(out)]) == 0
    return out


def test_null_case_negligible_noise_over_two_seeds_gives_no_star(null_study):
    summary = pd.read_csv(null_study / "summary.csv")
    noise = summary[summary["regime"] == "noise"].set_index("finding")
    assert not noise["ci_excludes_0"].any()
    assert noise.loc["macro", "diff_ci_low"] <= 0 <= noise.loc["macro", "diff_ci_high"]
    assert (noise["seeds"] == 2).all() and noise.loc["macro", "auc_sd_over_seeds"] > 0
    md = (null_study / "summary.md").read_text().replace("**", "")
    assert "and the training seeds (2 per regime" in md and "Primary comparison" in md
    assert "5 or more seeds are advised" in md and "benchmarks/stats_calibration.py" in md
    assert noise.loc["macro", "family"] == "primary"


def test_too_few_resamples_give_no_interval_and_no_star(capsys):
    rng = np.random.default_rng(5)
    labels, patients, preds = simulated_study(rng, effect=2.0, seeds=2, patients=60)
    summary = summary_table(score_regimes(labels, patients, preds, n_boot=1), ["A", "B"], baseline="none")
    new = summary[summary["regime"] == "new"]
    assert (new["diff_vs_none"].abs() > 0).all() and not new["ci_excludes_0"].any()
    for command in (["evaluate", "--run", "r"], ["compare", "--data", "d"]):
        assert main([*command, "--bootstrap", "199"]) == 2
        err = capsys.readouterr().err
        assert "--bootstrap: 199 is below 200" in err and len(err.strip().splitlines()) == 1


def test_unscored_label_names_the_class_that_is_missing():
    from mai_aug.reports.compare import _too_few

    assert _too_few({"positive_patients": 3}) == "too few positive patients (3)"
    assert _too_few({"positive_patients": 40}) == "too few negative patients"  # nearly every patient positive


def test_the_reports_quoted_false_star_rates_are_the_benchmarks():
    """report.md quotes benchmarks/stats_calibration.py's null rates: the quoted ranges are the CSV's."""
    table = pd.read_csv(ROOT / "benchmarks" / "results" / "stats-calibration-2026-12-03.csv")
    null = table[table["diff"] == 0]
    several = null[null["seeds"] >= 3]["primary_any_star"] * 100
    one = null[(null["seeds"] == 1) & (null["seed_effect"] != "shared")]["primary_any_star"] * 100
    shared = null[(null["seeds"] == 1) & (null["seed_effect"] == "shared")]["primary_any_star"] * 100
    finding = null[null["seeds"] != 2]["finding_any_star"] * 100
    assert (null[null["seeds"] == 2][["primary_any_star", "finding_any_star"]] == 0).all().all()  # no stars at 2
    assert f"{several.min():.0f}-{several.max():.0f}% with 3-10 seeds, {one.max():.0f}% with one" in MEASURED["primary"]
    assert f"({shared.max():.0f}% with one seed" in MEASURED["primary"]
    assert f"per-finding family {finding.min():.0f}-{finding.max():.0f}%" in MEASURED["secondary"]
    assert f"up to {null['finding_any_star_mcse'].max() * 100:.1f} points" in MEASURED["secondary"]


def test_readme_quotes_the_benchmarks_power():
    """README's power sentence is the benchmark CSV's primary power at +0.01."""
    table = pd.read_csv(ROOT / "benchmarks" / "results" / "stats-calibration-2026-12-03.csv")
    tenths = (table[table["diff"] == 0.01].set_index(["seeds", "seed_effect"])["primary_power"] * 1000).round()
    power = (tenths + 5) // 10  # whole percent, halves up as written (100 studies: rates in half points)
    readme = " ".join((ROOT / "README.md").read_text().split())
    none = " and ".join(f"{power[(k, 'none')]:.0f}% with {k}" for k in (5, 10))
    assert f"{power[(3, 'none')]:.0f}% of the time with 3 seeds, {none} when seeds do not vary" in readme
    assert f"only {power[(10, 'shared')]:.0f}% with 10 when they do" in readme


BLANK = """regimes:
  blank:
    deterministic:  # none's part is empty: every pixel below 2 becomes 0
      - {_target_: ThresholdIntensityd, keys: image, threshold: 2.0, above: true, cval: 0.0}
    random: []
"""


def test_a_regime_that_blanks_the_image_is_found_worse(phantom_dir, tmp_path):
    """Trained on black images, a network cannot beat chance: its primary difference is starred below 0."""
    (tmp_path / "blank.yaml").write_text(BLANK)
    (tmp_path / "tiny.yaml").write_text(
        "train: {batch_size: 16, lr: 3.0e-3, pretrained: none, in_channels: 1, workers: 0,\n"
        "        network: densenet, network_args: {init_features: 8, growth_rate: 4, block_config: [2, 2]}}\n")
    out = tmp_path / "out"
    assert main(["compare", "--data", str(phantom_dir), "--preset", str(tmp_path / "tiny.yaml"), "--regimes", "none",
                 "blank", "--regimes-file", str(tmp_path / "blank.yaml"), "--image-size", "64", "--epochs", "1",
                 "--steps-per-epoch", "60", "--bootstrap", "200", "--quiet", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    blank = summary[(summary["regime"] == "blank") & (summary["finding"] == "macro")].iloc[0]
    assert blank["family"] == "primary" and blank["ci_excludes_0"] and blank["diff_ci_high"] < 0, blank.to_dict()
