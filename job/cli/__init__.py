"""Command line: the only place that reads options and the environment (into ``JobConfig``).
TensorFlow is imported inside the commands, so ``--help`` and option errors answer at once."""

import logging
import sys

import click

from job.cli.commands import data_command, export, report
from job.cli.train import train
from job.cpu import enable_onednn_by_default
from job.errors import Interrupted, JobError


class Commands(click.Group):
    """Every command's expected failure ends as one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except JobError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(Interrupted.exit_code)


@click.group(
    cls=Commands,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "show_default": True,
    },
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, TensorFlow's own lines too.")
@click.version_option(package_name="mnist-job")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Train the seed's MNIST CNN, report how well it did, export it for TensorFlow Serving."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if verbose else logging.WARNING)
    enable_onednn_by_default()  # before any command imports TensorFlow
    ctx.meta["verbose"] = verbose  # TensorFlow's own lines too (cpu.import_tensorflow)


for command in (train, data_command, export, report):
    main.add_command(command)
