"""The chart's alerts and dashboard query series that exist: kvscale's own (registered by the
operator) and the engines' (the names the adapter queries, from the engine tables)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from kvscale.controller.autoscaler_metrics import AutoscalerMetrics
from kvscale.controller.telemetry import OperatorMetrics
from kvscale.engines import metric_queries

CHART = Path(__file__).resolve().parents[2] / "charts" / "kvscale"
RULE = CHART / "templates" / "prometheusrule.yaml"
DASHBOARD = CHART / "dashboards" / "kvscale-overview.json"
ENGINE_RELEASES = (("vllm", "0.11.0"), ("vllm", "0.10.0"), ("sglang", "0.5.14"))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def chart_text() -> str:
    return RULE.read_text(encoding="utf-8") + "\n".join(dashboard_exprs())


def operator_series() -> set[str]:
    registry = CollectorRegistry()
    OperatorMetrics(registry)
    AutoscalerMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def engine_series() -> set[str]:
    names: set[str] = set()
    for engine, version in ENGINE_RELEASES:
        for value in dataclasses.asdict(metric_queries(engine, version)).values():
            if isinstance(value, str) and ":" in value:
                names.update({value, f"{value}_bucket"})
    return names


def test_every_kvscale_series_in_the_chart_is_exported() -> None:
    used = set(re.findall(r"\bkvscale_[a-z_]+\b", chart_text()))
    assert used, "the chart queries no kvscale series"
    assert used <= operator_series(), sorted(used - operator_series())


def test_every_engine_series_in_the_chart_is_one_the_adapter_queries() -> None:
    used = set(re.findall(r"\b(?:vllm|sglang):[a-z_]+\b", chart_text()))
    assert {"vllm:kv_cache_usage_perc", "sglang:token_usage"} <= used
    assert used <= engine_series(), sorted(used - engine_series())


@pytest.mark.parametrize(
    "title",
    [
        "Replicas: recommended vs current",
        "KV-cache usage",
        "Waiting requests",
        "Preemptions / s",
        "TTFT p95",
        "ITL p95",
        "Decisions by reason (per 5 min)",
    ],
)
def test_dashboard_has_the_panel(title: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    assert panels[title]["targets"], title


@pytest.mark.parametrize(
    "alert",
    [
        "KvscaleKvHeadroomLow",
        "KvscalePreemptionsSustained",
        "KvscalePlanDrift",
        "KvscaleRolledBack",
        "KvscaleMetricsUnavailable",
    ],
)
def test_rule_has_the_alert(alert: str) -> None:
    assert f"- alert: {alert}\n" in RULE.read_text(encoding="utf-8")


def operator_labels() -> set[str]:
    """Every label name on the operator's own series (label_names of each metric)."""
    registry = CollectorRegistry()
    metrics = [OperatorMetrics(registry), AutoscalerMetrics(registry)]
    names: set[str] = set()
    for holder in metrics:
        for value in vars(holder).values():
            names.update(getattr(value, "_labelnames", ()))
    return names


def test_kvscale_series_are_selected_by_labels_the_operator_exports() -> None:
    """`namespace` on the operator's series would arrive as exported_namespace after a scrape
    of the operator pod (which attaches its own namespace); the chart must not select on it."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = [
        v["definition"] for v in dashboard["templating"]["list"] if v.get("type") == "query"
    ]
    text = chart_text() + "\n".join(variables)
    selectors = re.findall(r"\bkvscale_[a-z_]+\{([^}]*)\}", text)
    joins = re.findall(r"\bon \(([^)]*)\)", RULE.read_text(encoding="utf-8"))
    label_values = re.findall(r"label_values\(kvscale_[a-z_]+(?:\{[^}]*\})?, (\w+)\)", text)
    used = {m for sel in selectors for m in re.findall(r"(\w+)\s*=~?", sel)}
    used |= {label.strip() for join in joins for label in join.split(",")} | set(label_values)
    assert "llmdeployment_namespace" in used
    assert "namespace" not in operator_labels()
    assert used <= operator_labels(), sorted(used - operator_labels())
