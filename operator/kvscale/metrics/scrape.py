"""Scrape-side settings the Prometheus adapter depends on.

vLLM and SGLang name their series with a colon (`vllm:kv_cache_usage_perc`). When Prometheus
negotiates the OpenMetrics format, recent `prometheus_client` releases escape the colon to an
underscore in the sample lines (`escaping=underscores`, the default when the scraper does not ask
for UTF-8; see prometheus/client_python#1177), so Prometheus 2.x stores `vllm_kv_cache_usage_perc`
and every query for the documented names returns nothing. The integration tests reproduce it.

The fix lives in the scrape config, once for every query: a metric relabelling that restores the
documented names. It is a no-op for engines that already arrive with the colon.
"""

from __future__ import annotations

COLON_PREFIXES: tuple[str, ...] = ("vllm", "sglang")  # engines whose names use `prefix:`


def metric_relabel_configs(prefixes: tuple[str, ...] = COLON_PREFIXES) -> list[dict[str, object]]:
    """`metric_relabel_configs` entries (for a scrape config, PodMonitor or ServiceMonitor) that
    turn `vllm_x` back into `vllm:x`. Both engines use exactly one colon, after the prefix."""
    return [
        {
            "source_labels": ["__name__"],
            "regex": f"({'|'.join(prefixes)})_(.+)",
            "target_label": "__name__",
            "replacement": "${1}:${2}",
            "action": "replace",
        }
    ]


_OPERATOR_SPELLING = {"source_labels": "sourceLabels", "target_label": "targetLabel"}


def pod_monitor_metric_relabelings(
    prefixes: tuple[str, ...] = COLON_PREFIXES,
) -> list[dict[str, object]]:
    """The same relabelling spelled for a Prometheus Operator PodMonitor / ServiceMonitor
    (`metricRelabelings`: camelCase keys, same meaning)."""
    return [
        {_OPERATOR_SPELLING.get(key, key): value for key, value in rule.items()}
        for rule in metric_relabel_configs(prefixes)
    ]
