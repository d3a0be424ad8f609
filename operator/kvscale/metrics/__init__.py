"""kvscale.metrics."""
