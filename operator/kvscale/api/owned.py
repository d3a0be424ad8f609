"""Names kvscale owns on the engine pod: declared once, used by the builders and by the rules
that refuse a `spec.template` overlay touching them (ADR 0008)."""

from __future__ import annotations

# Labels and annotations kvscale puts on what it manages.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "kvscale.dev/deployment"
# Pod label the Prometheus scrape relabels into the `llmd` series label the autoscaler groups by.
LABEL_LLMD = "llmd"
MANAGED_BY = "kvscale"
ANNOTATION_PREFIX = "kvscale.dev/"
ANNOTATION_SPEC_HASH = f"{ANNOTATION_PREFIX}spec-hash"
ANNOTATION_PLAN_HASH = f"{ANNOTATION_PREFIX}plan-hash"
# Scrape hints written on the pod when no PodMonitor is used.
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")

GPU_RESOURCE = "nvidia.com/gpu"
ENGINE_CONTAINER = "engine"
PORT_NAME = "http"

# Pod volumes kvscale adds, and where.
SHM_VOLUME = "dshm"
SHM_MOUNT_PATH = "/dev/shm"
MODEL_CACHE_VOLUME = "model-cache"
# Environment variables kvscale sets from first-class fields.
ENV_HF_TOKEN = "HF_TOKEN"
ENV_HF_HOME = "HF_HOME"

#: Every pod label kvscale sets (the selector is one of them): the overlay may not set any.
OWNED_POD_LABELS = (
    LABEL_NAME,
    LABEL_INSTANCE,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_DEPLOYMENT,
    LABEL_LLMD,
)
#: Volume names reserved whether or not the feature that adds them is on.
OWNED_VOLUMES = (SHM_VOLUME, MODEL_CACHE_VOLUME)
