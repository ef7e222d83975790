"""`crm --help` describes every command, and `crm COMMAND --help` every argument.

The commands and arguments are read from the parser itself, so a command added without
a description fails here rather than passing unnoticed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from crmkit import cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def summaries() -> dict[str, str | None]:
    parser = cli.build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {choice.dest: choice.help for choice in action._choices_actions}


def test_the_parser_has_every_command_main_runs() -> None:
    assert set(subcommands()) >= {
        "up",
        "token",
        "keys",
        "replay",
        "rebuild",
        "serve",
        "tail",
        "export",
        "deadletters",
        "catalogue",
    }


def test_crm_help_lists_every_command_with_its_description() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(shown.split())  # argparse wraps long lines
    described = summaries()
    assert set(described) == set(subcommands())
    for name, summary in described.items():
        assert summary and len(summary) > 10, f"`crm {name}` has no description"
        assert f"{name} {summary}" in flat or f"{name} {' '.join(summary.split())}" in flat, name


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_argument_of_every_command_is_described(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = subcommands()[name]
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert parser.description and " ".join(parser.description.split()) in flat
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"`crm {name} {label}` has no help"
        assert " ".join(action.help.split()) in flat, f"`crm {name} --help` does not show {label}'s help"
