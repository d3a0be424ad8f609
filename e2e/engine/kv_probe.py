"""Size the KV cache with the real engine, for many configurations in one process.

Runs inside the engine's virtualenv. Reads a JSON list of `{"id": str, "argv": [...]}` on stdin
(argv as after `vllm serve`: the model directory, then the flags) and prints one JSON list of
`{"id", "cache_config", "log_lines", "error"}`.

For each case it does what `vllm serve` does up to a ready engine, minus the HTTP server: vLLM's
serve parser reads the argv, `AsyncEngineArgs.from_cli_args` and `create_engine_config` build
the configuration, and vLLM's `EngineCore` loads the model and sizes and allocates the KV cache
(`EngineCore._initialize_kv_caches`). `cache_config` is then `CacheConfig.metrics_info()`: the
very labels of the `vllm:cache_config_info` series a server exports, including
`num_gpu_blocks`, `kv_cache_size_tokens` (the figure of the "KV cache size: N tokens" log line)
and `kv_cache_max_concurrency` (unrounded). vLLM is imported once; each engine is shut down
before the next starts, so one process serves every case (a server start costs ~50 s; an
engine here ~2 s).

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set below); the KV
arithmetic does not depend on it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import traceback
from typing import Any

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

from parse_flags import build_serve_parser, parse_serve_args


class KvSizeLines(logging.Handler):
    """Keeps the engine's "KV cache size: N tokens, Maximum concurrency …" log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "KV cache size" in message:
            self.lines.append(message)


def size_one(parser: Any, command: Any, argv: list[str]) -> dict[str, Any]:
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.executor import Executor

    engine_args = parse_serve_args(parser, command, argv)
    config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
    lines = KvSizeLines()
    logging.getLogger("vllm").addHandler(lines)
    try:
        core = EngineCore(config, Executor.get_class(config), log_stats=False)
        labels = config.cache_config.metrics_info()  # before shutdown, which resets the pool
        core.shutdown()
    finally:
        logging.getLogger("vllm").removeHandler(lines)
        release_engine()
    return {"cache_config": labels, "log_lines": lines.lines, "error": None}


def release_engine() -> None:
    """Tear down the process-wide distributed groups an engine set up, also when its start-up
    failed, so the next engine (e.g. a MoE model that needs an expert-parallel group) builds
    its own."""
    from vllm.distributed import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()
    gc.collect()


def main() -> int:
    cases = json.load(sys.stdin)
    parser, command = build_serve_parser()
    results = []
    for case in cases:
        try:
            result = size_one(parser, command, list(case["argv"]))
        except Exception as error:  # one configuration the engine refuses is a result
            traceback.print_exc(file=sys.stderr)
            result = {"error": f"{type(error).__name__}: {error}"}
        results.append({"id": case["id"], **result})
        print(f"kv_probe: {case['id']}: {result.get('error') or 'ok'}", file=sys.stderr)
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
