"""A normal (non-editable) install ships the presets and regimes: build the wheel, install it elsewhere, import it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("mai_aug/configs/regimes.yaml", "mai_aug/configs/presets/demo.yaml",
           "mai_aug/configs/presets/article.yaml", "mai_aug/configs/presets/full.yaml",
           "mai_aug/configs/examples/my-regimes.yaml", "mai_aug/configs/examples/my-preset.yaml")


def _pip(*args: str, cwd: Path) -> str:
    """Run pip; return what it printed."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # offline-safe
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True, timeout=120)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (so no build/ or egg-info lands in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "mai_aug", src / "mai_aug", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    log = _pip("wheel", ".", "--no-deps", "--no-build-isolation", "-v", "-w", str(out), cwd=src)  # -v: setuptools' output
    (out / "build.log").write_text(log)
    (found,) = out.glob("mai_aug-*.whl")
    return found


def test_build_is_quiet_about_the_config_folders(wheel):
    """The data folders under mai_aug/configs are listed packages: no "Package would be ignored" warning."""
    log = (wheel.parent / "build.log").read_text()
    assert "regimes.yaml" in log  # the build's own output (its copied files) was captured
    assert "would be ignored" not in log and "absent from the `packages` configuration" not in log


def test_wheel_ships_presets_and_regimes(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(ROOT).as_posix()) for p in (ROOT / "mai_aug" / "configs").rglob("*.yaml")}
    assert set(SHIPPED) <= shipped
    assert shipped <= names, sorted(shipped - names)


def test_every_preset_resolves_from_an_installed_copy(wheel, tmp_path):
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel), cwd=tmp_path)
    probe = (
        "import mai_aug, pathlib, sys\n"
        "from mai_aug.settings.presets import PRESETS, load_preset\n"
        "from mai_aug.transforms.regimes import available_regimes\n"
        "assert pathlib.Path(mai_aug.__file__).is_relative_to(pathlib.Path(sys.argv[1]))\n"
        "print(sorted(available_regimes([])))\n"
        "for name in PRESETS:\n"
        "    print(name, sorted(load_preset(name)['train']))\n"
        "examples = pathlib.Path(mai_aug.__file__).parent / 'configs' / 'examples'\n"
        "print(sorted(available_regimes([examples / 'my-regimes.yaml'])))\n"
        "print('example preset', sorted(load_preset(str(examples / 'my-preset.yaml'))['train']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe, str(target)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "none" in lines[0] and "complex" in lines[0]
    assert [line.split()[0] for line in lines[1:6]] == ["demo", "article", "full", "robustness", "external"]
    assert "contrast" in lines[6] and lines[7].startswith("example preset")  # the example configs, installed
