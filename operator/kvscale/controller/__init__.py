"""kvscale.controller."""
