"""The operator's probe endpoints: /healthz (liveness) and /readyz (readiness + election role).

- `/healthz` answers 200 while the event loop serves requests: a wedged process is restarted,
  an API-server outage is not (restarting would not bring the API server back).
- `/readyz` answers 200 with `{"role": "leader" | "standby", ...}` while this replica can act
  or take over (it reached the API server within one lease duration), 503 otherwise.
  Standbys are Ready on purpose: with `maxUnavailable: 0` a rolling update waits for new pods
  to be Ready, and a new pod is a standby until the old leader goes; a PodDisruptionBudget
  counts Ready pods. Which replica acts is in the body and in the `kvscale_leader` gauge.
  docs/adr/0007-leader-election.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp.web

ReadinessProbe = Callable[[], tuple[bool, dict[str, Any]]]


@contextlib.asynccontextmanager
async def serving_probes(
    port: int, readiness: ReadinessProbe, host: str = "0.0.0.0"
) -> AsyncIterator[None]:
    """Serve /healthz and /readyz on `port` for the duration of the block (0 disables)."""
    if port <= 0:
        yield
        return

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"live": True})

    async def readyz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        ready, details = readiness()
        return aiohttp.web.json_response({"ready": ready, **details}, status=200 if ready else 503)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get("/healthz", healthz), aiohttp.web.get("/readyz", readyz)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
