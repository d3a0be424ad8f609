"""kvscale.engines."""
