"""python -m serving: query a TensorFlow Serving model over REST or gRPC, and operate it.

The group, its shared options and its one-line errors live here; ``query`` holds predict,
status, metadata, verify and card, ``operate`` holds load and rollout.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from job.cli.options import option_group
from job.cpu import enable_onednn_by_default
from job.export import contract as c
from serving.client import ServingError

EXIT_REQUEST_FAILED = 1
EXIT_BAD_INPUT = 2
MAX_LOAD_SECONDS = 3600  # serving load stops by itself, whatever it is given


def one_line_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ServingError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_REQUEST_FAILED)

    return wrapper


rest_option = click.option(
    "--rest", metavar="URL", help="REST base URL, e.g. http://localhost:8501"
)
grpc_option = click.option(
    "--grpc", "grpc_target", metavar="HOST:PORT", help="gRPC address, e.g. localhost:8500"
)
model_option = click.option("--model", default=c.MODEL_NAME, show_default=True, help="Model name.")
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds before a request is given up.",
)
server_options = option_group(
    rest_option,
    grpc_option,
    model_option,
    click.option(
        "--version",
        "model_version",
        type=click.IntRange(min=1),
        help="Model version.  [default: the newest the server has]",
    ),
    click.option(
        "--label", help="Version label instead of a number, e.g. stable or canary (version_labels)."
    ),
    timeout_option,
)


def version_choice(model_version: int | None, label: str | None):
    """--version or --label, as the clients take it (a number or a label)."""
    if model_version is not None and label:
        raise click.UsageError("give --version or --label, not both")
    return label or model_version


def pick_server(rest: str | None, grpc_target: str | None, rest_call, grpc_call):
    """The client function for the protocol given, and its target."""
    if bool(rest) == bool(grpc_target):
        raise click.UsageError("give exactly one of --rest URL or --grpc HOST:PORT")
    return (rest_call, rest) if rest else (grpc_call, grpc_target)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Query the MNIST model on TensorFlow Serving (REST or gRPC)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    enable_onednn_by_default()  # before any command imports TensorFlow


def _register() -> None:
    from serving.cli import operate, query  # noqa: F401 - each adds its commands to main


_register()
