"""The real Prometheus binary scraping the simulated engines found through file_sd.

Reuses the integration tier's `PrometheusServer` (start, readiness, stop, log tail) and only
changes where targets come from: a file_sd JSON file the engine runner rewrites as pods come
and go, so Prometheus discovers engines the way it discovers pods in a cluster (the target
labels `namespace`, `pod`, `llmd` are what kvscale's scrape config attaches).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kvscale.metrics.scrape import metric_relabel_configs

_INTEGRATION_DIR = Path(__file__).resolve().parents[2] / "tests" / "integration"
if str(_INTEGRATION_DIR) not in sys.path:
    sys.path.append(str(_INTEGRATION_DIR))

from promfixture import PrometheusServer, find_prometheus, free_loopback_port  # noqa: E402

__all__ = ["FileSdPrometheus", "PrometheusServer", "find_prometheus", "free_loopback_port"]

SCRAPE_INTERVAL = "1s"


@dataclass
class FileSdPrometheus(PrometheusServer):
    """Prometheus whose only job reads its targets from `targets_file` (refreshed every 1 s)."""

    targets_file: Path = field(default_factory=lambda: Path("targets.json"))

    def write_config(self) -> Path:
        config = {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
            },
            "scrape_configs": [
                {
                    "job_name": "engines",
                    "metric_relabel_configs": metric_relabel_configs(),
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": SCRAPE_INTERVAL}
                    ],
                }
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    @property
    def running(self) -> bool:
        return self._process is not None
