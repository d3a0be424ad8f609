"""kvscale.engines — serving-engine adapters (pure): flags from a capacity plan, and metric names.

One module per engine holds version tables (flags with the releases they exist in, metric
names, command, probe/scrape endpoints); `render` walks them identically for every engine.
"""

from kvscale.capacity.release import (
    EngineVersion,
    SupportedVersions,
    UnsupportedEngineError,
    VersionRange,
)
from kvscale.engines.adapter import EngineEndpoints
from kvscale.engines.metrics import EngineMetrics
from kvscale.engines.promql import (
    DEFAULT_GROUP_BY,
    DeploymentQueries,
    PromQLError,
    build_deployment_queries,
    promql_cache_config,
    promql_counter_rate,
    promql_histogram_quantile,
    promql_itl_quantile,
    promql_kv_usage,
    promql_preemption_rate,
    promql_replicas_reporting,
    promql_requests_running,
    promql_requests_waiting,
    promql_ttft_quantile,
)
from kvscale.engines.render import (
    ENGINE_NAMES,
    RenderedArgs,
    engine_command,
    engine_endpoints,
    metric_queries,
    render,
    render_args,
    supported_versions,
)

__all__ = [
    "DEFAULT_GROUP_BY",
    "ENGINE_NAMES",
    "DeploymentQueries",
    "EngineEndpoints",
    "EngineMetrics",
    "EngineVersion",
    "PromQLError",
    "RenderedArgs",
    "SupportedVersions",
    "UnsupportedEngineError",
    "VersionRange",
    "build_deployment_queries",
    "engine_command",
    "engine_endpoints",
    "metric_queries",
    "promql_cache_config",
    "promql_counter_rate",
    "promql_histogram_quantile",
    "promql_itl_quantile",
    "promql_kv_usage",
    "promql_preemption_rate",
    "promql_replicas_reporting",
    "promql_requests_running",
    "promql_requests_waiting",
    "promql_ttft_quantile",
    "render",
    "render_args",
    "supported_versions",
]
