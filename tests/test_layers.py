"""The package layers (docs/architecture.md): every import of mai_aug runs downward, and no package imports itself
back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mai_aug"
# Lowest first. A package may import only from packages before it (and from itself).
LAYERS = ("core", "stats", "transforms", "data", "networks", "settings", "reports", "engine", "analyses", "study",
          "bundle", "cli")


def layer_of(module: str) -> str | None:
    """``mai_aug.core.files`` -> ``core``; ``mai_aug.cli`` -> ``cli``; the package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mai_aug" else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``mai_aug`` import in a file, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                                                     if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).is_dir()]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] == "mai_aug"]


def upward_imports() -> list[str]:
    """``file:line imports module`` for every import of a higher layer."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = layer_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if own not in LAYERS:
            continue
        for line, module in imports_of(path):
            target = layer_of(module)
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(own):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return problems


def test_every_package_is_in_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert packages - {"__init__", "__main__", "configs"} <= set(LAYERS)


def test_imports_run_downward():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "mai_aug"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("def f():\n    from mai_aug.study.compare import run_compare\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    assert upward_imports() == ["mai_aug/core/bad.py:2 imports mai_aug.study.compare"]


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_is_named_in_architecture_doc(layer):
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert f"`{layer}" in text


def test_every_command_has_a_workflow_script():
    from mai_aug.cli import COMMANDS  # registered when the module loads

    scripts = {p.stem.replace("_", "-") for p in (PACKAGE.parent / "workflows").glob("*.py")}
    assert set(COMMANDS) == scripts
    for name in COMMANDS:
        text = (PACKAGE.parent / "workflows" / f"{name.replace('-', '_')}.py").read_text()
        assert f'main(["{name}", *sys.argv[1:]])' in text, name


def test_workflow_configs_are_the_shipped_examples():
    examples = PACKAGE / "configs" / "examples"
    links = sorted((PACKAGE.parent / "workflows" / "configs").iterdir())
    assert [p.name for p in links] == sorted(p.name for p in examples.glob("*.yaml"))
    assert all(p.is_symlink() and p.resolve() == (examples / p.name).resolve() for p in links)
