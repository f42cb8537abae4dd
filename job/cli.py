"""Command line: the only place that reads options and the environment.

Heavy modules (TensorFlow) are imported inside the commands, so ``--help`` and option
errors answer at once.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import click

from job.config import DEVICES, DISTRIBUTE, RECIPES, JobConfig, TrainConfig, recipe_named
from job.errors import JobError

log = logging.getLogger("job")

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mnist-job"


def setup_logging(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
            sys.exit(130)

    return wrapper


def data_options(command):
    options = [
        click.option(
            "--data",
            "data_path",
            type=click.Path(path_type=Path),
            help="A Keras-format mnist.npz to use; no other source is tried.",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path),
            envvar="MNIST_JOB_CACHE_DIR",
            default=DEFAULT_CACHE_DIR,
            show_default=True,
            show_envvar=True,
            help="Where verified MNIST is cached as mnist.npz.",
        ),
        click.option(
            "--offline",
            is_flag=True,
            envvar="MNIST_JOB_OFFLINE",
            show_envvar=True,
            help="Never use the network; only --data or the caches.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="mnist-job")
def main(verbose: bool) -> None:
    """Train the seed's MNIST CNN, report how well it did, export it for TensorFlow Serving."""
    setup_logging(verbose)


def positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


def fraction(ctx, param, value):
    if value is not None and not 0 <= value < 1:
        raise click.BadParameter(f"must be in [0, 1), got {value}")
    return value


# Shared by train and export, which both write a version under the model base path.
export_dir_option = click.option(
    "--export-dir",
    type=click.Path(path_type=Path),
    default=Path("models/mnist"),
    show_default=True,
    help="Model base path; versions are numbered folders in it.",
)
export_version_option = click.option(
    "--version",
    "export_version",
    type=int,
    callback=positive,
    help="Export version number.  [default: next free]",
)


@main.command()
@click.option(
    "--epochs",
    type=int,
    callback=positive,
    help="Passes over the training data.  [default: 5; fast recipe: 20, early stopping]",
)
@click.option(
    "--batch-size",
    type=int,
    callback=positive,
    help="Examples per step per replica.  [default: 32, the seed's; fast recipe: 128]",
)
@click.option(
    "--validation-split",
    type=float,
    callback=fraction,
    help="Hold out this fraction of the training set for validation curves.  "
    "[default: 0, as the seed; fast recipe: 0.1]",
)
@click.option(
    "--recipe",
    type=click.Choice(RECIPES),
    default="default",
    show_default=True,
    help="default: the seed's math (Adam defaults, batch 32) fed by tf.data. fast: "
    "batch 128, warm-up + cosine LR, 2-pixel shifts, early stopping.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
@click.option("--limit", type=int, callback=positive, help="Train on the first N images only.")
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="auto uses a GPU when TensorFlow sees one.",
)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Deterministic ops: bit-identical results for the same seed (slower).",
)
@click.option(
    "--mixed-precision",
    is_flag=True,
    help="mixed_float16 compute (GPU); the softmax stays float32.",
)
@click.option("--jit/--no-jit", default=False, show_default=True, help="XLA-compile training.")
@click.option(
    "--steps-per-execution",
    type=int,
    callback=positive,
    default=64,
    show_default=True,
    help="Training steps run per call into TensorFlow.",
)
@click.option(
    "--distribute",
    type=click.Choice(DISTRIBUTE),
    default="auto",
    show_default=True,
    help="none, mirrored (GPUs of one machine), multi-worker (TF_CONFIG or Slurm).",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path),
    help="Run directory.  [default: a new <UTC timestamp>-<random> folder in --runs-dir]",
)
@click.option(
    "--runs-dir",
    type=click.Path(path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Where the default run directory is made.",
)
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --output-dir.")
@click.option(
    "--export/--no-export",
    default=True,
    show_default=True,
    help="Export a SavedModel for TensorFlow Serving.",
)
@export_dir_option
@export_version_option
@data_options
@expected_errors
def train(**opts) -> None:
    """Train and evaluate the CNN; write metrics.json, figures, model.keras and the export."""
    from job.pipeline import run_training

    config = build_config(opts)
    report = run_training(config)
    if report:
        click.echo(
            f"test accuracy {report['test']['accuracy']:.4f}  "
            f"loss {report['test']['loss']:.4f}  ->  {config.run_dir}"
        )


def build_config(opts: dict) -> JobConfig:
    recipe = recipe_named(opts["recipe"])

    def pick(name, fallback):
        return opts[name] if opts[name] is not None else fallback

    run_dir, new_run_dir = default_run_dir(opts["output_dir"], opts["runs_dir"])
    return JobConfig(
        run_dir=run_dir,
        new_run_dir=new_run_dir,
        data_path=opts["data_path"],
        cache_dir=opts["cache_dir"],
        allow_network=not opts["offline"],
        export=opts["export"],
        export_dir=opts["export_dir"],
        export_version=opts["export_version"],
        overwrite=opts["overwrite"],
        train=TrainConfig(
            recipe=recipe.name,
            epochs=pick("epochs", recipe.epochs),
            batch_size=pick("batch_size", recipe.batch_size),
            validation_split=pick("validation_split", recipe.validation_split),
            seed=opts["seed"],
            limit=opts["limit"],
            device=opts["device"],
            deterministic=opts["deterministic"],
            mixed_precision=opts["mixed_precision"],
            jit=opts["jit"],
            steps_per_execution=opts["steps_per_execution"],
            distribute=opts["distribute"],
        ),
    )


def default_run_dir(output_dir: Path | None, runs_dir: Path) -> tuple[Path, bool]:
    """(the run directory, whether it is a new generated name).

    Every worker of a multi-worker run must name the same folder: under Slurm the default
    is ``slurm-<job id>`` (a requeued job keeps its id, so it resumes); with TF_CONFIG the
    folder must be given.
    """
    from job.rundir import new_run_name
    from job.training.cluster import names_several_workers

    if output_dir is not None:
        return output_dir, False
    if names_several_workers():
        job_id = os.environ.get("SLURM_JOB_ID")
        if os.environ.get("TF_CONFIG") or not job_id:
            raise JobError("multi-worker runs need --output-dir: every worker must name it")
        return runs_dir / f"slurm-{job_id}", False
    return runs_dir / new_run_name(), True


@main.command("data")
@data_options
@expected_errors
def data_command(data_path: Path | None, cache_dir: Path, offline: bool) -> None:
    """Fetch (if needed) and verify MNIST without training."""
    from job.data import load_mnist

    dataset = load_mnist(data_path, cache_dir, allow_network=not offline)
    info = dataset.describe()
    click.echo(
        f"{info['train_examples']} train + {info['test_examples']} test images from "
        f"{info['source']} ({info['path']}); sha256 {info['sha256'][:16]}...; "
        f"{'byte-exact original MNIST' if info['canonical_mnist'] else 'not the original MNIST'}"
    )


@main.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="A finished run directory (holds model.keras).",
)
@export_dir_option
@export_version_option
@expected_errors
def export(run_dir: Path, export_dir: Path, export_version: int | None) -> None:
    """Export a finished run's model.keras as a SavedModel for TensorFlow Serving."""
    from job.export.savedmodel import export_for_serving
    from job.report import read_report
    from job.rundir import load_trained_model

    model = load_trained_model(run_dir)
    report = read_report(run_dir) if (run_dir / "metrics.json").exists() else None
    run_info = {k: report[k] for k in ("config", "data", "model", "test")} if report else None
    path = export_for_serving(model, export_dir, export_version, run_info)
    click.echo(str(path))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the reports' tables as JSON.")
@expected_errors
def report(paths: tuple[Path, ...], as_json: bool) -> None:
    """Print one or more metrics reports (files or run directories) as a table."""
    import pandas as pd

    from job.report import read_report, reports_table

    table = reports_table([read_report(p) for p in paths])
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
        return
    with pd.option_context("display.width", 200, "display.max_columns", None):
        click.echo(table.to_string(index=False))
