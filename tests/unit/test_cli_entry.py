"""The `kvscale` entry point: dispatch and exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kvscale.cli import EXIT_BROKEN_PIPE, build_parser, main

REPO = Path(__file__).resolve().parents[2]


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


def test_the_simulator_dependencies_are_an_extra_the_operator_never_imports() -> None:
    """numpy and matplotlib are the `sim` extra; loading the operator pulls neither in."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    names = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    assert not names & {"numpy", "matplotlib"}
    assert {re.split(r"[<>=\[ ]", d)[0] for d in project["optional-dependencies"]["sim"]} >= {
        "numpy",
        "matplotlib",
    }
    probe = (
        "import sys, kvscale.controller.runtime, kvscale.cli.run_cmd;"
        " print(sorted(m for m in ('numpy', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_simulator_command_without_the_extra_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy -> ModuleNotFoundError
    for module in [m for m in sys.modules if m.startswith(("kvscale.sim", "kvscale.cli.sim"))]:
        monkeypatch.delitem(sys.modules, module)
    assert main(["simulate", "--trace", "x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "kvscale simulate: simulate: needs the simulator's dependencies (numpy is not"
        " installed); fix: pip install 'kvscale[sim]'"
    )


def test_version_is_the_projects(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    expected = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kvscale {expected}"
