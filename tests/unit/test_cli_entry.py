"""The `kvscale` entry point: dispatch and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvscale.cli import EXIT_BROKEN_PIPE, build_parser, main


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


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`kvscale plan -f … -o json | head`: no BrokenPipeError traceback, the SIGPIPE status."""
    example = Path(__file__).resolve().parents[2] / "examples" / "01-llama-3.1-8b-l4-l40s-h100.yaml"
    with subprocess.Popen(
        [sys.executable, "-m", "kvscale", "plan", "-f", str(example), "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first write
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""


def test_run_without_a_cluster_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("KVSCALE_METRICS_PORT", "0")
    monkeypatch.setenv("KVSCALE_HEALTH_PORT", "0")
    assert main(["run", "--standalone"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvscale run: kubeconfig: no cluster to connect to")
    assert "fix: set KUBECONFIG" in err
    assert len(err.strip().splitlines()) == 1
