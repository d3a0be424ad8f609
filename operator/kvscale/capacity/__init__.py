"""kvscale.capacity."""
