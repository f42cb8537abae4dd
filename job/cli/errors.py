"""Expected failures as one line on stderr and their exit code."""

from __future__ import annotations

import functools
import sys

import click

from job.errors import EXIT_INTERRUPTED, JobError


def expected_errors(command):
    """Turn a JobError into one line on stderr and its exit code; no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except JobError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper
