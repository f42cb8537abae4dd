"""``python -m job train``: options -> one frozen JobConfig -> the pipeline."""

import shlex
import sys
from dataclasses import fields
from pathlib import Path

import click

from job.cli.options import (
    data_options,
    export_dir_option,
    export_version_option,
    gate_options,
)
from job.config import (
    DEFAULT_STEPS_PER_EXECUTION,
    RECIPES,
    JobConfig,
    TrainConfig,
)
from job.cpu import import_tensorflow
from job.errors import Interrupted, JobError
from job.training.cluster import names_several_workers, read_environment


@click.command()
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Passes over the training data.  [default: 5; fast recipe: 20]",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Examples per step per replica.  [default: 32, the seed's; fast recipe: 128]",
)
@click.option(
    "--validation-split",
    type=click.FloatRange(0, 1, max_open=True),
    help="Hold out this fraction of the training set for validation curves.  "
    "[default: 0, as the seed]",
)
@click.option(
    "--recipe",
    type=click.Choice(list(RECIPES)),
    default="default",
    help="default: the seed's math (Adam defaults, batch 32) fed by tf.data. fast: "
    "batch 128, warm-up + cosine LR, weight decay, 2-pixel shifts, 20 epochs.",
)
@click.option("--seed", type=int, default=42, help="Random seed.")
@click.option("--limit", type=click.IntRange(min=1), help="Train on the first N images only.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
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
@click.option("--jit/--no-jit", default=False, help="XLA-compile training.")
@click.option(
    "--steps-per-execution",
    type=click.IntRange(min=1),
    default=DEFAULT_STEPS_PER_EXECUTION,
    help="Training steps run per call into TensorFlow.",
)
@click.option(
    "--distribute",
    type=click.Choice(["auto", "none", "mirrored", "multi-worker"]),
    default="auto",
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
    help="Where the default run directory is made.",
)
@click.option("--overwrite", is_flag=True, help="Start afresh over a finished or unfinished run.")
@click.option(
    "--export/--no-export",
    default=True,
    help="Export a SavedModel for TensorFlow Serving.",
)
@export_dir_option
@export_version_option
@gate_options
@data_options
def train(**opts) -> None:
    """Train and evaluate the CNN; write metrics.json, figures, model.keras and the export."""
    ctx = click.get_current_context()
    import_tensorflow(ctx.meta.get("verbose", False))
    from job.pipeline import run_training

    config = build_config(opts, read_environment())
    # The command as a person types it (python -m job / mnist-job), not Python's argv[0].
    command = " ".join([ctx.find_root().info_name or "mnist-job", shlex.join(sys.argv[1:])])
    try:
        report = run_training(config, command)
    except KeyboardInterrupt:
        raise Interrupted(
            f"{config.run_dir}: interrupted; run the same command again to resume"
            if config.run_dir.exists()
            else f"{config.run_dir}: interrupted before training; nothing was written"
        ) from None
    if not report:
        return  # a worker other than the chief writes nothing
    from job.pages import PAGE_FILENAME  # deferred with pandas, as every module of the run

    test = report["test"]
    click.echo(f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}")
    click.echo(f"report: {config.run_dir / PAGE_FILENAME}")
    if report["artifacts"]["export"]:
        click.echo("next: make serve, then make verify (or python -m serving predict --help)")
    else:
        click.echo(f"next: python -m job export --run {config.run_dir}")


def build_config(opts: dict, environ: dict[str, str]) -> JobConfig:
    """The options as one JobConfig; the recipe fills --epochs and --batch-size not given."""
    recipe = RECIPES[opts["recipe"]]
    defaults = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "validation_split": 0.0}
    train = {f.name: opts[f.name] for f in fields(TrainConfig)}
    train.update({k: v for k, v in defaults.items() if train[k] is None})
    run_dir, new_run_dir = default_run_dir(opts["output_dir"], opts["runs_dir"], environ)
    given = {f.name: opts[f.name] for f in fields(JobConfig) if f.name in opts}
    return JobConfig(
        **given | {"export_version": opts["export_version"] or opts["version"]},
        run_dir=run_dir,
        new_run_dir=new_run_dir,
        allow_network=not opts["offline"],
        train=TrainConfig(**train),
        environ=environ,
    )


def default_run_dir(
    output_dir: Path | None, runs_dir: Path, environ: dict[str, str]
) -> tuple[Path, bool]:
    """(run dir, generated?): every worker names the same; ``slurm-<job id>`` resumes a requeue."""
    from job.rundir import new_run_name

    if output_dir is not None:
        return output_dir, False
    if names_several_workers(environ):
        job_id = environ.get("SLURM_JOB_ID")
        if environ.get("TF_CONFIG") or not job_id:
            raise JobError("multi-worker runs need --output-dir: every worker must name it")
        return runs_dir / f"slurm-{job_id}", False
    return runs_dir / new_run_name(), True
