"""kvscale.sim."""
