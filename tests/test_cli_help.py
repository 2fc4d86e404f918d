"""What ``--help`` tells a new user: what the tool is for and every option's default."""

from __future__ import annotations

import argparse

import pytest

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


def test_phantom_help_shows_its_defaults(capsys):
    assert main(["phantom", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 3000)", "(default: 256)", "(default: 3.0)", "(default: 1.0)", "(default: none)"):
        assert shown in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_with_a_default_shows_it(name):
    parser = _sub_parsers()[name]
    help_text = " ".join(parser.format_help().split())
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default is None or default is False or default == []:
            continue
        if default is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        shown = parser._get_formatter()._expand_help(action)
        assert "default" in shown, f"{name} {action.option_strings[0]}: {shown}"
        assert " ".join(shown.split()) in help_text
