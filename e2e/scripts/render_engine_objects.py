"""Print, as one YAML stream, the objects the operator applies for every example.

Each LLMDeployment in examples/ goes through the operator's own `reconcile` (spec parsing,
planning, builders, apply) against an in-memory API that records what is applied, so the
stream is exactly what a cluster would receive: the engine Deployment, Service,
PodDisruptionBudget and PodMonitor. e2e/scripts/chart-check.sh feeds it to kubeconform and to
the Pod Security check. Adopt-mode examples apply nothing of their own and are skipped.

Usage: python e2e/scripts/render_engine_objects.py [--non-root-only] [EXAMPLES_DIR]
(default: examples/). `--non-root-only` keeps the Deployments whose pod runs as non-root
(`spec.template`'s securityContext.runAsNonRoot): those must pass Pod Security "restricted";
the rest run the engine image's default user (root, as vLLM's image does) and must pass
"baseline" (docs/adr/0008-engine-pod-template.md).
Exits 1 naming the example when one does not reconcile to a workload.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from kvscale.controller import kube
from kvscale.controller.reconcile import Controller, reconcile
from kvscale.controller.settings import PrometheusSettings, ScrapeMode, Settings

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "serving"
JsonDict = dict[str, Any]


class RecordingKube:
    """A KubeClient that keeps what is applied; everything else finds nothing."""

    def __init__(self) -> None:
        self.applied: list[JsonDict] = []

    async def apply(self, obj: JsonDict, *, field_manager: str = "kvscale") -> JsonDict:
        self.applied.append(copy.deepcopy(obj))
        return obj

    async def get(self, ref: kube.ResourceRef, namespace: str | None, name: str) -> JsonDict:
        raise kube.NotFoundError(f"{ref.kind} {namespace}/{name} not found", 404)

    async def delete(self, ref: kube.ResourceRef, namespace: str | None, name: str) -> None:
        return None

    async def create(self, obj: JsonDict) -> JsonDict:
        return await self.apply(obj)

    async def patch_merge(
        self,
        ref: kube.ResourceRef,
        namespace: str | None,
        name: str,
        patch: JsonDict,
        subresource: str | None = None,
    ) -> JsonDict:
        return patch

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        return True


def llm_deployments(examples: Path) -> list[tuple[Path, JsonDict]]:
    found = []
    for path in sorted(examples.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "LLMDeployment":
                found.append((path, doc))
    return found


async def render(examples: Path) -> list[JsonDict]:
    settings = Settings(prometheus=PrometheusSettings(scrape_mode=ScrapeMode.POD_MONITOR))
    objects: list[JsonDict] = []
    for index, (path, doc) in enumerate(llm_deployments(examples)):
        if (doc.get("spec") or {}).get("mode") == "adopt":
            continue
        client = RecordingKube()
        body = copy.deepcopy(doc)
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", NAMESPACE)
        meta.update(uid=f"00000000-0000-0000-0000-{index:012d}", generation=1)
        await reconcile(Controller(settings=settings, kube=client), body)
        if not any(o["kind"] == "Deployment" for o in client.applied):
            raise SystemExit(f"{path.name}: reconcile applied no Deployment")
        objects.extend(client.applied)
    return objects


def runs_as_non_root(obj: JsonDict) -> bool:
    pod = (obj.get("spec") or {}).get("template", {}).get("spec", {})
    return obj["kind"] == "Deployment" and bool(
        (pod.get("securityContext") or {}).get("runAsNonRoot")
    )


def main() -> int:
    args = sys.argv[1:]
    non_root_only = "--non-root-only" in args
    paths = [a for a in args if a != "--non-root-only"]
    examples = Path(paths[0]) if paths else ROOT / "examples"
    objects = asyncio.run(render(examples))
    if non_root_only:
        objects = [o for o in objects if runs_as_non_root(o)]
        if not objects:
            raise SystemExit(
                "no example's engine pod runs as non-root: nothing to hold to restricted"
            )
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
