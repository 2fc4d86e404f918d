"""What ``--help`` tells a new user: what the tool is for and every option's default."""

from __future__ import annotations

import argparse

from mai_aug.cli import COMMANDS, build_parser, main


def _sub_parsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_describes_the_tool_not_the_module(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "chest X-ray" in text and "mai-aug compare --out runs/demo" in text and "README.md" in text
    assert "mai-aug COMMAND --help" in text and "argument parsing" not in text
    assert all(name in text for name in COMMANDS)
