"""Helpers shared by the CLI subcommands."""

from __future__ import annotations

import argparse
import math


class CliError(Exception):
    """A user-facing error: one line that names the field and the fix; exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def finite_float(text: str) -> float:
    """An argparse `type` for a float flag: `nan` and `inf` are refused (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value
