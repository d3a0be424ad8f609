"""The `kvscale` entry point: dispatch and exit codes."""

from __future__ import annotations

import pytest

from kvscale.cli import build_parser, main


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: kvscale" in capsys.readouterr().out


def test_unknown_subcommand_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2


def test_parser_lists_registered_subcommands() -> None:
    help_text = build_parser().format_help()
    assert "COMMAND" in help_text
