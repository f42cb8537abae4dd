"""What several commands share: options and their checks."""

import functools
from pathlib import Path

import click

from job.export.contract import CACHE_DIR_VARIABLE, DEFAULT_CACHE_DIR
from job.gate import DEFAULT_MIN_TEST_ACCURACY, DEFAULT_TOLERANCE


def option_group(*options):
    """One decorator for several click options; ``--help`` lists them in the order given."""
    return lambda command: functools.reduce(lambda f, option: option(f), reversed(options), command)


cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    envvar=CACHE_DIR_VARIABLE,
    default=DEFAULT_CACHE_DIR,
    show_envvar=True,
    help="Where verified MNIST is cached as mnist.npz (make and both CLIs share it).",
)


data_options = option_group(
    click.option(
        "--data",
        "data_path",
        type=click.Path(path_type=Path),
        help="A Keras-format mnist.npz to use; no other source is tried.",
    ),
    cache_dir_option,
    click.option(
        "--offline",
        is_flag=True,
        envvar="MNIST_JOB_OFFLINE",
        show_envvar=True,
        help="Never use the network; only --data or the caches.",
    ),
)


export_dir_option = click.option(
    "--export-dir",
    type=click.Path(path_type=Path),
    default=Path("models/mnist"),
    help="Model base path; versions are numbered folders in it.",
)
export_version_option = option_group(
    click.option(
        "--export-version",
        type=click.IntRange(min=1),
        help="The export's version number.  [default: next free]",
    ),
    # Its spelling until 0.1.0, kept for one release: click warns that it is deprecated.
    click.option(
        "--version", type=click.IntRange(min=1), hidden=True, deprecated="Use --export-version."
    ),
)


gate_options = option_group(
    click.option(
        "--min-test-accuracy",
        type=click.FloatRange(0, 1),
        default=DEFAULT_MIN_TEST_ACCURACY,
        help="Export only a model with at least this test accuracy (0: any).",
    ),
    click.option(
        "--gate/--no-gate",
        default=True,
        help="Export only a model no worse than the newest exported version (its recorded "
        "test accuracy, less --gate-tolerance).",
    ),
    click.option(
        "--gate-tolerance",
        type=click.FloatRange(0, 1),
        default=DEFAULT_TOLERANCE,
        help="How far under the newest version's test accuracy still passes.",
    ),
)
