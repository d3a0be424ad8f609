"""kvscale: KV-cache-aware capacity planning and autoscaling for LLM serving on Kubernetes."""

__version__ = "0.1.0"
