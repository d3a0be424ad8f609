"""Helpers shared by the CLI subcommands."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: one line that names the field and the fix; exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
