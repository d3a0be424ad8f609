"""kvscale.scaling."""
