"""The held-out probe of hostile inputs (issue 18): names that are paths, counts without bound, outputs that are
not files, folders that are not comparisons, YAML alias bombs, bytes that are not text, numbers beyond floats.

Each row of ``CASES`` builds one ``mai-aug`` invocation and gives the expected exit status and message fragment,
checked as in ``tests/test_bad_input.py`` (one line, status 2, no traceback, no code run). On top of that a
refused command must leave the test folder exactly as it was: nothing written (no phantom cached, no run folder
made, wherever a name points), no user file changed, moved or deleted. None of the rows trains: every refusal
comes before the long work, which is what they check.
"""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from test_bad_input import Env, check_outcome

from conftest import write_nih
from mai_aug.cli import main
from mai_aug.core.errors import MaiAugError
from mai_aug.core.layout import StudyLayout

TIME_LIMIT_S = 120  # an alias bomb used to keep the process busy indefinitely: fail instead of hanging
ROWS = [(f"{i:08d}_000.png", "No Finding" if i % 3 else "Effusion", i, "PA") for i in range(1, 31)]
NAME_RULE = "not a valid name; use letters, digits"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """A small NIH-layout folder (30 patients) and this test's folder; no run is needed (nothing trains)."""
    data = write_nih(tmp_path / "data", ROWS)
    return Env(phantom=data, datalist=tmp_path / "no-datalist.json", run=tmp_path / "no-run", tmp=tmp_path)


@pytest.fixture
def time_limit():
    def expired(signum, frame):
        raise TimeoutError(f"still busy after {TIME_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed) with its kind, size and content digest."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            body = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path.relative_to(root))] = (info.st_mode >> 12, info.st_size, hash(body))
    return found


# --- builders ------------------------------------------------------------------------------------------------


def compare(env: Env, *extra: str, out: Path | None = None) -> list[str]:
    """``compare`` with its phantom cache in the test folder (so a cached phantom would show as a change)."""
    return ["compare", "--out", str(out or env.tmp / "cmp"), "--cache-dir", str(env.tmp / "cache"),
            "--epochs", "1", "--steps-per-epoch", "1", "--image-size", "32", "--workers", "0", *extra]


def regimes_in(env: Env, body: str, *extra: str, command: str = "compare") -> list[str]:
    """A regimes file of ``body`` (``{tmp}`` is the test folder), listed or compared against ``none``."""
    path = env.write("mine.yaml", textwrap.dedent(body).replace("{tmp}", str(env.tmp)))
    if command == "regimes":
        return ["regimes", "--regimes-file", str(path), "--image-size", "32", *extra]
    return compare(env, "--regimes-file", str(path), *extra)


def named_regime(name: str, command: str = "compare") -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        body = f"regimes:\n  {name}: {{description: mine, random: [{{_target_: RandGaussianNoised, keys: image, prob: 1.0}}]}}\n"
        shown = name.replace("{tmp}", str(env.tmp)).strip("'\"")
        extra = () if command == "regimes" else ("--regimes", "none", shown)
        return regimes_in(env, body, *extra, command=command)

    return build


def huge_number(argument: str, command: str = "regimes") -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        body = f"regimes:\n  mine: {{random: [{{_target_: RandAffined, keys: image, {argument}}}]}}\n"
        return regimes_in(env, body, *(() if command == "regimes" else ("--regimes", "mine")), command=command)

    return build


BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 10 if a else ['x'] * 10)}]\n"
               for a, b in zip(["", *"abcdefgh"], "abcdefghi"))  # 10**9 leaves after nine levels, in 1 KB


def alias_bomb(where: str, *extra: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        if where == "regimes":
            path = env.write("bomb.yaml", BOMB + "regimes:\n  mine: {description: *i}\n")
            return ["regimes", "--regimes-file", str(path), "--image-size", "32", *extra]
        if where == "preset":
            path = env.write("bomb.yaml", "x-anchors:\n" + textwrap.indent(BOMB, "  ") + "train: {network_args: {x: *i}}\n")
            return compare(env, "--preset", str(path))
        if where == "settings":
            path = env.write("bomb.yaml", "x-anchors:\n" + textwrap.indent(BOMB, "  ") + "network_args: {x: *i}\n")
            return ["train", "--settings", str(path), "--out", str(env.tmp / "run")]
        run = env.tmp / "run"
        env.write("run/config.yaml", "x-anchors:\n" + textwrap.indent(BOMB, "  ") + f"out: {run}\nnetwork_args: {{x: *i}}\n")
        return ["evaluate", "--run", str(run), "--bootstrap", "200"]

    return build


def special_out(kind: str, command: str = "split") -> Callable[[Env], list[str]]:
    """``--out`` naming a FIFO, a folder or a symlink (to a file the command should write through)."""

    def build(env: Env) -> list[str]:
        out = env.tmp / "out.json"
        if kind == "fifo":
            os.mkfifo(out)
        elif kind == "folder":
            out.mkdir()
        else:  # a symlink to an existing file elsewhere: the link stays a link, its target is written
            (env.tmp / "real").mkdir()
            (env.tmp / "real" / "target.json").write_text("old\n")
            out.symlink_to(env.tmp / "real" / "target.json")
        if command == "predict":
            image = env.write("x.png", (env.phantom / "images" / ROWS[0][0]).read_bytes())
            return ["predict", "--run", str(env.run), str(image), "--out", str(out)]
        return ["split", "--data", str(env.phantom), "--out", str(out)]

    return build


def foreign_out(*extra: str) -> Callable[[Env], list[str]]:
    """``compare --out`` a folder holding a user's own datalist.json, report.md, summary.csv (and a folder)."""

    def build(env: Env) -> list[str]:
        for name in ("datalist.json", "report.md", "summary.csv"):
            env.write(f"mine/{name}", f"the user's own {name}\n")
        env.write("mine/notes/seed-ideas.txt", "keep\n")
        return compare(env, *extra, out=env.tmp / "mine")

    return build


def preset(body: str | bytes) -> Callable[[Env], list[str]]:
    return lambda env: compare(env, "--preset", str(env.write("preset.yaml", body)))


def settings(body: str | bytes) -> Callable[[Env], list[str]]:
    return lambda env: ["train", "--settings", str(env.write("settings.yaml", body)), "--out", str(env.tmp / "run")]


def cli(*argv: str) -> Callable[[Env], list[str]]:
    """A command line; ``{tmp}`` becomes the test folder."""
    return lambda env: [a.replace("{tmp}", str(env.tmp)) for a in argv]


# --- the table -----------------------------------------------------------------------------------------------

BIG = "10000000000"
CASES = [
    # names that become path parts never leave the comparison folder, nor read as ConfigParser ids
    pytest.param(named_regime("{tmp}/elsewhere/absregime"), 2, NAME_RULE, id="regime-absolute-path"),
    pytest.param(named_regime("../../escape"), 2, "regime '../../escape': not a valid name", id="regime-dot-dot"),
    pytest.param(named_regime("a#b"), 2, "regime 'a#b': not a valid name", id="regime-hash-config-id"),
    pytest.param(named_regime("a#b", "regimes"), 2, "regime 'a#b': not a valid name", id="regime-hash-listed"),
    pytest.param(named_regime("1", "regimes"), 2, "regime 1 (not a string): not a valid name",
                 id="regime-integer-key"),
    pytest.param(named_regime("'-x'", "regimes"), 2, "regime '-x': not a valid name", id="regime-leading-dash"),
    pytest.param(named_regime("r" * 65, "regimes"), 2, "at most 64 characters", id="regime-name-too-long"),
    pytest.param(cli("compare", "--regimes", "none", "none", "--out", "{tmp}/cmp", "--cache-dir", "{tmp}/cache"), 2,
                 "--regimes: 'none' given more than once", id="compare-duplicate-regime"),
    pytest.param(preset("regimes: [none, basic, none]\n"), 2, "'none' given more than once",
                 id="preset-duplicate-regime"),
    # counts have an upper bound: one line, before anything is allocated
    pytest.param(cli("compare", "--bootstrap", BIG, "--out", "{tmp}/cmp"), 2,
                 "argument --bootstrap: 10000000000 is above 100000", id="compare-bootstrap-huge"),
    pytest.param(cli("evaluate", "--run", "{tmp}/run", "--bootstrap", BIG), 2, "--bootstrap", id="evaluate-bootstrap-huge"),
    pytest.param(cli("evaluate", "--run", "{tmp}/run", "--tta", BIG), 2, "--tta", id="evaluate-tta-huge"),
    pytest.param(cli("phantom", "--out", "{tmp}/ph", "--n", BIG), 2, "argument --n:", id="phantom-n-huge"),
    pytest.param(cli("phantom", "--out", "{tmp}/ph", "--size", BIG), 2, "argument --size:", id="phantom-size-huge"),
    pytest.param(cli("phantom", "--out", "{tmp}/ph", "--workers", BIG), 2, "argument --workers:", id="phantom-workers-huge"),
    pytest.param(cli("phantom", "--out", "{tmp}/ph", "--images-per-patient", "1e300"), 2, "--images-per-patient",
                 id="phantom-images-per-patient-huge"),
    pytest.param(cli("preview", "--data", "{tmp}/data", "--regime", "basic", "--samples", BIG, "--out", "{tmp}/pv"),
                 2, "argument --samples:", id="preview-samples-huge"),
    pytest.param(cli("preview", "--data", "{tmp}/data", "--regime", "basic", "--n", BIG, "--out", "{tmp}/pv"),
                 2, "argument --n:", id="preview-n-huge"),
    *[pytest.param(cli("train", "--data", "{tmp}/data", "--out", "{tmp}/run", f"--{flag}", BIG), 2,
                   f"argument --{flag}: {BIG} is above", id=f"train-{flag}-huge")
      for flag in ("epochs", "steps-per-epoch", "batch-size", "workers", "image-size", "early-stop", "checkpoint-every")],
    *[pytest.param(cli("compare", "--out", "{tmp}/cmp", f"--{flag}", BIG), 2, f"argument --{flag}:",
                   id=f"compare-{flag}-huge")
      for flag in ("seeds", "epochs", "batch-size", "workers", "image-size", "steps-per-epoch", "tta",
                   "saliency-max-images")],
    pytest.param(cli("saliency", "--run", "{tmp}/run", "--max-images", "1" + "0" * 30), 2, "--max-images",
                 id="saliency-max-images-huge"),
    pytest.param(cli("robustness", "--run", "{tmp}/run", "--workers", BIG), 2, "--workers", id="robustness-workers-huge"),
    pytest.param(preset(f"bootstrap: {BIG}\n"), 2, f"bootstrap: {BIG} is above 100000", id="preset-bootstrap-huge"),
    pytest.param(preset(f"seeds: {BIG}\n"), 2, "seeds: 10000000000 is above", id="preset-seeds-huge"),
    pytest.param(preset(f"phantom: {{n: {BIG}}}\n"), 2, "phantom.n: 10000000000 is above", id="preset-phantom-n-huge"),
    pytest.param(preset(f"train: {{epochs: {BIG}}}\n"), 2, "train.epochs: 10000000000 is above",
                 id="preset-epochs-huge"),
    pytest.param(preset(f"train: {{batch_size: {BIG}}}\n"), 2, "train.batch_size", id="preset-batch-size-huge"),
    pytest.param(settings(f"image_size: {BIG}\n"), 2, "settings.yaml: image_size: 10000000000 is above",
                 id="settings-image-size-huge"),
    pytest.param(lambda env: ["evaluate", "--run", str(env.write("run/config.yaml", f"out: run\nimage_size: {BIG}\n")
                                                        .parent), "--bootstrap", "200"],
                 2, "config.yaml: image_size: 10000000000 is above", id="run-config-image-size-huge"),
    # an --out that is not a regular file is never replaced; a symlink is written through
    pytest.param(special_out("fifo"), 2, "out.json: exists and is not a regular file", id="split-out-fifo"),
    pytest.param(special_out("folder"), 2, "out.json: exists and is a folder", id="split-out-folder"),
    pytest.param(special_out("fifo", "predict"), 2, "out.json: exists and is not a regular file",
                 id="predict-out-fifo"),
    pytest.param(special_out("folder", "predict"), 2, "out.json: exists and is a folder", id="predict-out-folder"),
    pytest.param(special_out("symlink"), 0, "wrote", id="split-out-symlink-written-through"),
    # a folder that is not a comparison is not written into
    pytest.param(foreign_out(), 2, "not empty and not a comparison folder", id="compare-out-user-files"),
    pytest.param(foreign_out("--retrain"), 2, "not empty and not a comparison folder",
                 id="compare-out-user-files-retrain"),
    pytest.param(lambda env: compare(env, out=env.write("cmp", "a file\n")), 2, "exists and is not a folder",
                 id="compare-out-a-file"),
    # YAML aliases are refused in every user file (they expanded to 10**9 nodes)
    pytest.param(alias_bomb("regimes"), 2, "bomb.yaml: YAML alias *a at line 2 is not accepted", id="alias-bomb-regimes"),
    pytest.param(alias_bomb("regimes", "--trust-config"), 2, "bomb.yaml: YAML alias", id="alias-bomb-regimes-trusted"),
    pytest.param(alias_bomb("preset"), 2, "bomb.yaml: YAML alias *a at line 3", id="alias-bomb-preset"),
    pytest.param(alias_bomb("settings"), 2, "bomb.yaml: YAML alias *a at line 3", id="alias-bomb-settings"),
    pytest.param(alias_bomb("run-config"), 2, "config.yaml: YAML alias", id="alias-bomb-run-config"),
    pytest.param(cli("train", "--data", "{tmp}/data", "--out", "{tmp}/run", "--network-args", "{a: &a [1], b: *a}"),
                 2, "YAML alias *a", id="alias-network-args"),
    # bytes that are not text
    pytest.param(preset(b"train: {epochs: 1}\n# \xff\xfe\n"), 2, "preset.yaml: not UTF-8 text (byte 21", id="preset-non-utf8"),
    pytest.param(settings(b"epochs: \xff\n"), 2, "settings.yaml: not UTF-8 text", id="settings-non-utf8"),
    # numbers beyond any transform's range: one line naming the regime, transform and value
    pytest.param(huge_number("prob: 1e400"), 2, "regime 'mine', random[0] RandAffined: prob = '1e400' is not a finite",
                 id="regime-prob-1e400"),
    pytest.param(huge_number("prob: 1.0e+400"), 2, "RandAffined: prob = inf", id="regime-prob-float-inf"),
    pytest.param(huge_number("range_x: 1e309"), 2, "RandAffined: range_x = '1e309'", id="regime-range-1e309"),
    pytest.param(huge_number(f"spatial_size: [{'9' * 400}, 32]"), 2, "RandAffined: spatial_size[0] = 99999",
                 id="regime-400-digit-integer"),
    pytest.param(huge_number("prob: .nan"), 2, "prob = nan", id="regime-prob-nan"),
    pytest.param(huge_number("prob: 1e400", "compare"), 2, "prob = '1e400'", id="compare-regime-prob-1e400"),
]


@pytest.mark.parametrize(("build", "status", "fragment"), CASES)
def test_hostile_input(build, status, fragment, env, capsys, monkeypatch, time_limit):
    argv = build(env)
    before = snapshot(env.tmp)
    check_outcome(argv, status, fragment, env, capsys, monkeypatch)
    after = snapshot(env.tmp)
    if status == 2:  # refused: nothing written, moved or deleted anywhere under the test folder
        assert after == before
    else:  # the symlink row: the link is kept, its target holds the datalist
        assert (env.tmp / "out.json").is_symlink()
        assert '"training"' in (env.tmp / "real" / "target.json").read_text()
        assert {k for k in after if k.endswith(".tmp")} == set()


def test_study_layout_refuses_paths_from_names(tmp_path):
    study = StudyLayout(tmp_path)
    for name in ("../escape", "/abs/olute", "a/b", "a#b", ".hidden", "", 1):
        for path_of in (lambda n: study.run_dir(n, 0), study.roc, study.reliability,
                        lambda n: study.run_tensorboard(n, 0), lambda n: StudyLayout.label(n, 0)):
            with pytest.raises(MaiAugError, match="not a valid name"):
                path_of(name)
    with pytest.raises(MaiAugError, match="not a seed number"):
        study.run_dir("basic", "../x")
    assert study.run_dir("complex-wide", "01") == tmp_path / "complex-wide" / "seed-01"


def test_a_comparison_folder_is_recognised_by_its_marker_or_its_old_run_folders(tmp_path):
    for name in ("datalist.json", "report.md", "summary.csv"):
        (tmp_path / name).write_text("mine\n")
    (tmp_path / "notes" / "seed-1").mkdir(parents=True)  # a folder shaped like a run, with nothing trained
    study = StudyLayout(tmp_path)
    assert not study.is_study()
    (tmp_path / "basic" / "seed-0").mkdir(parents=True)
    (tmp_path / "basic" / "seed-0" / "fingerprint.json").write_text("{}")  # a run folder of older code
    assert study.is_study()
    (tmp_path / "basic" / "seed-0" / "fingerprint.json").unlink()
    assert not study.is_study()
    study.marker.write_text("x")
    assert study.is_study()


def test_split_writes_through_a_unique_temporary_file(env, capsys):
    """The old fixed ``<out>.tmp`` raced between two processes: one in the way (here a folder) must not matter."""
    out = env.tmp / "dl.json"
    (env.tmp / "dl.json.tmp").mkdir()
    assert main(["split", "--data", str(env.phantom), "--out", str(out)]) == 0, capsys.readouterr().err
    assert '"training"' in out.read_text()
    assert sorted(p.name for p in env.tmp.iterdir()) == ["data", "dl.json", "dl.json.tmp"]
