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


def test_version_is_the_projects(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    expected = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kvscale {expected}"


def test_a_subcommand_whose_extra_is_missing_says_which_and_the_rest_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    import kvscale.cli as cli

    real = importlib.import_module

    def without_numpy(name: str) -> object:
        if name == "kvscale.cli.simulate_cmd":
            raise ModuleNotFoundError("No module named 'numpy'", name="numpy")
        return real(name)

    monkeypatch.setattr(cli.importlib, "import_module", without_numpy)
    assert "simulate" in build_parser().format_help()
    assert main(["simulate", "--trace", "t.csv"]) == 1
    assert "pip install 'kvscale[sim]'" in capsys.readouterr().err
    assert main(["crd"]) == 0
