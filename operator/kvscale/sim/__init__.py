"""kvscale.sim: a vLLM-like serving-engine simulator, a fleet, trace loaders and a replay harness.

Stands in for a GPU engine in the replay benchmark, `kvscale simulate` / `kvscale demo`, and as
a real HTTP server (`python -m kvscale.sim.server`) in integration and e2e tests. Physics comes
from the capacity plan (block pool, blocks per request, roofline step time); the autoscaling
policy under test is `kvscale.scaling.decide` itself. Only the CLI, tests, bench and e2e import
this package. Entry points:

* `engine.EngineSim`, `engine.EngineConfig`, `setup.build_engine_config(plan)`
* `fleet.Fleet`, `router.build_router(name)`, `policies.build_policy(name, config, static)`
* `traces.load_trace(path, fmt)`, `traces.scale_trace`, `traces.slice_trace`
* `replay.run_replay(trace, setup, policy)`, `replay.size_static_replicas(trace, setup)`
* `server.main()` (the simulated engine server); `report.write_report` (plots, needs matplotlib)

See docs/simulator.md.
"""
