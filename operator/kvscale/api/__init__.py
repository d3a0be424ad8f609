"""kvscale.api."""
