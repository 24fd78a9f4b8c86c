"""The one error type every ``squall`` command raises for bad input."""

from __future__ import annotations

import click


class SquallError(click.ClickException):
    """Bad input a user gave: shown as one line, exit code 2."""

    exit_code = 2
