"""Each subpackage exports its public names lazily: every name resolves, and importing a package loads no torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["core", "data", "transforms", "engine", "networks", "settings", "stats", "study", "reports", "analyses",
            "bundle"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_the_modules_own(package):
    module = importlib.import_module(f"mai_aug.{package}")
    assert module.__all__ and dir(module) == sorted(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(value, "__name__", name) == name or not callable(value), (package, name)
        assert not isinstance(value, type(sys)), f"mai_aug.{package}.{name} is a module, not the exported name"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_importing_every_package_and_the_command_line_loads_no_torch():
    code = ("import sys, mai_aug.cli; " + "; ".join(f"import mai_aug.{p}" for p in PACKAGES)
            + "; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
