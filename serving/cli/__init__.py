"""python -m serving: the group, its shared options and one-line errors; ``query`` and
``operate`` add the commands."""

import functools
import os
import sys
from pathlib import Path

import click

from job.export import contract as c
from serving import ServingError, client


class OneLineErrors(click.Group):
    """A group whose commands turn every ServingError into one line and exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ServingError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


def option_group(*options):
    """One decorator for several click options; ``--help`` lists them in the order given."""
    return lambda command: functools.reduce(lambda f, option: option(f), reversed(options), command)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (gRPC needs it) with fd 2 on /dev/null: TensorFlow 2.21 logs its start-up
    (oneDNN, CUDA probes) through absl before TF_CPP_MIN_LOG_LEVEL can stop it."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401 - deferred: only gRPC needs it
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def address(parse):
    """A click callback: the address as ``parse`` makes it, or a usage error (exit 2)."""

    def callback(ctx, param, value):
        try:
            return None if value is None else parse(value)
        except ServingError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


model_option = click.option("--model", default=c.MODEL_NAME, help="Model name.")
cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    envvar=c.CACHE_DIR_VARIABLE,
    default=c.DEFAULT_CACHE_DIR,
    show_envvar=True,
    help="Where verified MNIST is cached as mnist.npz (make and both CLIs share it).",
)
format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    help="json: one object for programs.",
)
export_dir_option = click.option(
    "--export-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=f"models/{c.MODEL_NAME}",
    help="The model base path here: each version's run record says which run made it.",
)
run_option = click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    help="Compare with this run's metrics.json.  [default: the run that made the version served]",
)
_protocol_options = (
    click.option(
        "--rest",
        callback=address(client.rest_address),
        metavar="URL",
        help="REST address, e.g. http://localhost:8501 (host:port means http://).",
    ),
    click.option(
        "--grpc",
        "grpc_target",
        callback=address(client.grpc_address),
        metavar="HOST:PORT",
        help="gRPC address, e.g. localhost:8500 (no scheme).",
    ),
)
_version_options = (
    click.option(
        "--version",
        "model_version",
        type=click.IntRange(min=1),
        help="Model version.  [default: the newest the server has]",
    ),
    click.option(
        "--label", help="Version label instead of a number, e.g. stable or canary (version_labels)."
    ),
)
_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    help="Seconds before a request is given up.",
)


def server_options(with_version: bool = True):
    """--rest or --grpc, --model, [--version or --label,] --timeout -> the command gets
    ``server`` (a client.Server), ``model`` [and ``version``: a number, a label or None]."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(rest, grpc_target, timeout, model_version=None, label=None, **kwargs):
            if bool(rest) == bool(grpc_target):
                raise click.UsageError("give exactly one of --rest URL or --grpc HOST:PORT")
            if model_version is not None and label:
                raise click.UsageError("give --version or --label, not both")
            if with_version:
                kwargs["version"] = label or model_version
            if grpc_target and click.get_current_context().find_root().obj == "quiet":
                import_tensorflow_quietly()
            return command(server=client.Server(rest or grpc_target, bool(rest), timeout), **kwargs)

        versions = _version_options if with_version else ()
        return option_group(*_protocol_options, model_option, *versions, _timeout_option)(wrapper)

    return decorate


@click.group(
    cls=OneLineErrors,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(package_name="mnist-job", prog_name="mnist-serving")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own log lines.")
@click.pass_context
def main(ctx, verbose: bool) -> None:
    """Query the MNIST model on TensorFlow Serving (REST or gRPC), and operate it."""
    if not verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        ctx.obj = "quiet"  # gRPC imports TensorFlow: its log lines and CUDA probes stay hidden
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


from serving.cli import operate, query  # noqa: E402, F401 - each adds its commands to main
