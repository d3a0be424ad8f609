"""Seeding the forecast's daily profile from Prometheus history (`query_range`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kvscale.controller.autoscaler_status import load_scaler_state, seed_demand_profile
from kvscale.engines import metric_queries, promql_kv_usage
from kvscale.metrics import DeploymentTarget, PrometheusSource
from kvscale.scaling.forecast import SEASON_BIN_S, season_bin

CHAT = DeploymentTarget("team-a", "chat", "vllm", "0.11.0", pods_expected=2)
DAY_S = 86_400.0


@dataclass
class RangeClient:
    """Answers range queries from a table of {query: [(t, value)]} for the `chat` series."""

    series: dict[str, list[tuple[float, str]]]
    asked: list[tuple[str, str]] = field(default_factory=list)

    def custom_query(self, query: str, params: Any = None, timeout: Any = None) -> Any:
        return []

    def custom_query_range(
        self, query: str, start_time: datetime, end_time: datetime, step: str
    ) -> Any:
        self.asked.append((query, step))
        labels = {"namespace": "team-a", "llmd": "chat"}
        other = {"namespace": "team-b", "llmd": "chat"}
        points = [[t, v] for t, v in self.series.get(query, [])]
        return [{"metric": labels, "values": points}, {"metric": other, "values": [[0.0, "9"]]}]


def test_history_reads_kv_demand_and_prompt_rate_for_the_deployment() -> None:
    metrics = metric_queries("vllm", "0.11.0")
    kv_query = promql_kv_usage(metrics, ("namespace", "llmd"), agg="sum")
    assert kv_query is not None
    probe = PrometheusSource("http://prometheus.invalid", client=RangeClient({}))
    rate_query = probe.build_family(metrics).signals["prompt_tokens_per_s"]
    assert rate_query is not None
    client = RangeClient({kv_query: [(0.0, "1.5"), (600.0, "NaN")], rate_query: [(600.0, "2000")]})
    source = PrometheusSource("http://prometheus.invalid", client=client)
    history = source.demand_history(CHAT, 0.0, 600.0, SEASON_BIN_S)
    assert history == [(0.0, 1.5, None), (600.0, None, 2000.0)]
    assert {step for _, step in client.asked} == {"600s"}


def test_a_client_without_range_queries_gives_no_history() -> None:
    class InstantOnly:
        def custom_query(self, query: str, params: Any = None, timeout: Any = None) -> Any:
            return []

    source = PrometheusSource("http://prometheus.invalid", client=InstantOnly())
    assert source.demand_history(CHAT, 0.0, 600.0, SEASON_BIN_S) == []


def _status(profile: Any = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "selectedGpuType": "h100",
        "plans": [{"gpuType": "h100", "prefillTokensPerSecond": 10_000.0}],
    }
    if profile is not None:
        status["autoscaler"] = {"demandProfile": profile}
    return status


def test_a_week_of_history_becomes_the_daily_profile_in_status() -> None:
    # a week at 2 replicas' worth of KV, 4 from 09:00 to 10:00; prompts at 5k tokens/s
    history = [
        (t, 4.0 if 9 * 3600 <= t % DAY_S < 10 * 3600 else 2.0, 5000.0)
        for t in range(0, int(7 * DAY_S), 60)
    ]
    seeded = seed_demand_profile(_status(), history)
    season = load_scaler_state(seeded["autoscaler"]).season
    assert season is not None
    assert season.kv_units[season_bin(9.5 * 3600)] == 4.0
    assert season.kv_units[season_bin(3 * 3600)] == 2.0
    assert season.prefill_units[season_bin(3 * 3600)] == 0.5  # 5k of 10k tokens/s


def test_a_profile_already_in_status_is_kept() -> None:
    kept = {"kvUnits": "", "prefillUnits": ""}
    assert seed_demand_profile(_status(kept), [(0.0, 1.0, 1.0)])["autoscaler"] == {
        "demandProfile": kept
    }
    assert "autoscaler" not in seed_demand_profile(_status(), [])


def test_a_fleet_seeding_within_one_step_reads_each_range_query_once() -> None:
    client = RangeClient({})
    source = PrometheusSource("http://prometheus.invalid", client=client)
    other = DeploymentTarget("team-b", "chat", "vllm", "0.11.0", pods_expected=1)
    assert source.demand_history(CHAT, 0.0, 600.0, SEASON_BIN_S) == []
    assert source.demand_history(other, 5.0, 605.0, SEASON_BIN_S) == [(0.0, 9.0, 9.0)]
    assert len(client.asked) == 2  # the KV query and the prompt-rate query, once each
    source.demand_history(CHAT, 600.0, 1200.0, SEASON_BIN_S)  # a step later: read again
    assert len(client.asked) == 4
