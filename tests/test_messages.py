"""The library names settings, the command line shows its flags: one message, two audiences."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mai_aug.cli import build_parser, command_parsers, flag_naming, main
from mai_aug.core.errors import MaiAugError, shown
from mai_aug.data.store_build import ensure_store
from mai_aug.transforms.regimes import load_regime

ROOT = Path(__file__).resolve().parents[1]
#: Files whose strings may spell flags: the command line itself, the flags' help texts, and MONAI bundle commands.
SPEAKS_CLI = {"cli.py", "settings/schema.py", "bundle/export.py", "bundle/metadata.py"}
FLAG = re.compile(r"(?<![\w`-])--[a-z][a-z0-9-]+")
QUOTED_COMMAND = re.compile(r"`[^`]*`")


def test_a_setting_is_shown_as_the_flag_of_the_command_that_ran_else_anothers_else_its_name():
    commands = command_parsers(build_parser())
    others = [p for name, p in commands.items() if name != "robustness"]
    naming = flag_naming(commands["robustness"], others)
    text = "`site_data` x: not a phantom made with `test_shift` site; `split` y; `weighted_loss`; `no_such_key` 1"
    assert shown(text, naming) == ("--site-data x: not a phantom made with --test-shift site; --split y; "
                                   "--no-weighted-loss; no_such_key 1")
    assert naming("progress") == "--quiet"  # a flag storing into the setting under another name
    assert shown("re-run it (`mai-aug evaluate --run R`)", naming) == "re-run it (`mai-aug evaluate --run R`)"
    assert shown(text) == text  # the Python API: no naming installed, the setting's own name


def test_a_library_error_names_the_setting_and_the_command_line_prints_the_flag(phantom_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    image = str(next((phantom_dir / "images").glob("*.png")))
    with pytest.raises(MaiAugError, match=r"^`cache_dir` \S+file/stores: cannot write there"):
        ensure_store([image], load_regime("none", 32), tmp_path / "file" / "stores")
    assert main(["prepare", "--data", str(phantom_dir), "--image-size", "32",
                 "--cache-dir", str(tmp_path / "file" / "stores")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --cache-dir " in err and "`" not in err and "Traceback" not in err


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Each string literal of ``tree`` but docstrings, an f-string as one text (its fields as ``{}``)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    parts_of_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and id(node) not in parts_of_fstrings):
            found.append((node.lineno, node.value))
    return found


def test_no_library_message_names_a_flag_outside_a_quoted_command_line():
    package = ROOT / "mai_aug"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() in SPEAKS_CLI:
            continue
        for line, text in _strings(ast.parse(path.read_text())):
            if FLAG.search(QUOTED_COMMAND.sub("", text)):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {text[:80]!r}")
    assert not offenders, "\n".join(offenders)
