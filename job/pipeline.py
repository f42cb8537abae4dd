"""One training run, stage by stage: data -> model -> train -> evaluate -> report/plots -> export.

Outputs go to the run directory in an order that makes ``metrics.json`` the last file
written: a run directory with a report is a finished run.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from job import data as data_stage
from job.config import JobConfig, recipe_named
from job.errors import JobError
from job.files import check_writable_dir, save_keras_atomic

log = logging.getLogger(__name__)

MODEL_FILENAME = "model.keras"
FIGURES = ("accuracy.png", "loss.png", "predictions.png", "confusion_matrix.png")
STAGING_DIRNAME = ".staging"


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to clobber a finished run unless asked; clear it when asked.

    Raises:
        JobError: a finished run is there and ``overwrite`` is false, or it cannot be written.
    """
    from job.report import REPORT_FILENAME
    from job.train import BACKUP_DIRNAME, HISTORY_FILENAME

    finished = (run_dir / REPORT_FILENAME).exists()
    if finished and not overwrite:
        raise JobError(f"{run_dir}: holds a finished run; pass --overwrite or another --output-dir")
    try:
        check_writable_dir(run_dir)
    except OSError as exc:
        raise JobError(f"{run_dir}: output directory is not writable ({exc.strerror})") from None
    if overwrite:  # start afresh: an old backup or history would be resumed otherwise
        shutil.rmtree(run_dir / BACKUP_DIRNAME, ignore_errors=True)
        (run_dir / HISTORY_FILENAME).unlink(missing_ok=True)


def load_data(config: JobConfig) -> data_stage.Dataset:
    return data_stage.load_mnist(config.data_path, config.cache_dir, config.allow_network)


def run_training(config: JobConfig) -> dict:
    """Train, evaluate, write figures, model, export and report. Returns the report."""
    started = time.perf_counter()
    t = config.train
    prepare_run_dir(config.run_dir, config.overwrite)
    dataset = load_data(config)
    arrays = dataset.arrays
    if t.limit is not None and t.limit > len(arrays.x_train):
        raise JobError(
            f"--limit {t.limit} is larger than the {len(arrays.x_train)} training images"
        )

    # TensorFlow is imported only now, after the cheap checks, so bad input fails fast.
    from job import distribute, evaluate, export, model, report, train

    used = train.select_device(t.device)
    train.configure_threads(used)
    # A multi-worker strategy must exist before anything starts TensorFlow's runtime.
    strategy_info, strategy = distribute.make_strategy(t.distribute, t.batch_size)
    device_info = train.configure_runtime(
        t.device, used, t.mixed_precision, t.deterministic, t.seed
    )
    x_train, x_test = data_stage.scale_mnist_data(arrays.x_train[: t.limit], arrays.x_test)
    x_train, x_test = data_stage.add_channel_axis(x_train), data_stage.add_channel_axis(x_test)
    (x_fit, y_fit), validation = train.split_validation(
        x_train, arrays.y_train[: t.limit], t.validation_split
    )
    recipe = recipe_named(t.recipe)
    global_batch = strategy_info["global_batch_size"]
    train_ds = train.make_dataset(x_fit, y_fit, global_batch, t.seed, recipe.translate_pixels)
    val_ds = train.make_dataset(*validation, global_batch) if validation else None
    steps = train.steps_per_epoch(len(x_fit), global_batch)

    with strategy.scope():
        net = model.get_model(x_train.shape[1:])
        model.compile_model(
            net,
            optimizer=train.make_optimizer(recipe, steps, t.epochs),
            steps_per_execution=t.steps_per_execution,
            jit_compile=t.jit,
        )
    work_dir = distribute.work_dir(config.run_dir, strategy)
    # One device: the job's own loop. Several: Keras' fit (mirrored) or the multi-worker loop.
    loop = {"none": "local", "mirrored": "keras-fit"}.get(strategy_info["mode"], "multi-worker")
    shards = train.batch_shards(used, global_batch) if loop == "local" else 1
    if loop == "multi-worker":
        result = distribute.train_multi_worker(
            strategy, net, train_ds, t.epochs, config.run_dir, work_dir, global_batch
        )
        if not distribute.is_chief(strategy):  # only the chief evaluates and writes
            distribute.cleanup_worker_dir(work_dir, config.run_dir)
            return {}
        # Keras' evaluate and predict share fit's trouble under this strategy; a plain
        # batched call gives the same numbers.
        probabilities = evaluate.predict_in_batches(net, x_test)
        test_loss = evaluate.cross_entropy(arrays.y_test, probabilities)
        test_accuracy = None  # taken from the predictions below
    else:
        result = train.train_model(
            net,
            train_ds,
            val_ds,
            t.epochs,
            work_dir,
            recipe.early_stopping_patience,
            loop=loop,
            shards=shards,
        )
        test_loss, test_accuracy = evaluate.evaluate_model(net, x_test, arrays.y_test)
        probabilities = net.predict(x_test, batch_size=1024, verbose=0)
    metrics = evaluate.compute_metrics(arrays.y_test, probabilities)
    if test_accuracy is None:
        test_accuracy = metrics["accuracy"]

    staging = config.run_dir / STAGING_DIRNAME
    shutil.rmtree(staging, ignore_errors=True)  # left by a crash: never half of a run
    write_figures(staging, result.history, arrays, probabilities, metrics, t.seed)
    save_keras_atomic(net, staging / MODEL_FILENAME)

    epoch_seconds = [e["seconds"] for e in result.history]
    median_epoch = statistics.median(epoch_seconds)
    summary = {
        "config": config.to_dict(),
        "environment": report.environment(device_info),
        "data": {
            **dataset.describe(),
            "train_examples": len(x_fit),
            "validation_examples": len(validation[0]) if validation else 0,
        },
        "model": {
            "name": net.name,
            "parameters": int(net.count_params()),
            "layers": [layer.__class__.__name__ for layer in net.layers],
        },
        "distribution": strategy_info,
        "training": {
            "loop": loop,
            "batch_shards": shards,
            "history": result.history,
            "resumed_from_epoch": result.resumed_from_epoch,
            "stopped_early_at": result.stopped_early_at,
        },
        "test": {
            "loss": test_loss,
            **metrics,
            "accuracy": test_accuracy,
            "predicted_accuracy": metrics["accuracy"],
        },
    }
    export_path = None
    if config.export:
        export_path = export.export_for_serving(
            net,
            config.export_dir,
            config.export_version,
            run_info={k: summary[k] for k in ("config", "data", "model")}
            | {"test": {"loss": test_loss, "accuracy": test_accuracy}},
        )
    full = report.build_report(
        **summary,
        timings={
            "total_seconds": time.perf_counter() - started,
            "train_seconds": result.seconds,
            "epoch_seconds": epoch_seconds,
            "median_epoch_seconds": median_epoch,
            "examples_per_second": len(x_fit) / median_epoch if median_epoch else 0.0,
        },
        artifacts={
            "model": MODEL_FILENAME,
            "figures": list(FIGURES),
            "export": str(export_path) if export_path else None,
        },
    )
    commit_outputs(staging, config.run_dir)
    report.write_report(config.run_dir, full)
    log.info(
        "test accuracy %.4f, loss %.4f; report in %s",
        test_accuracy,
        test_loss,
        config.run_dir / report.REPORT_FILENAME,
    )
    return full


def write_figures(out_dir: Path, history: list[dict], arrays, probabilities, metrics, seed):
    from job import plots

    frame = pd.DataFrame(history)
    picks = np.random.default_rng(seed).choice(len(arrays.x_test), 4, replace=False)
    figures = {
        "accuracy.png": plots.learning_curve_figure(frame, "accuracy"),
        "loss.png": plots.learning_curve_figure(frame, "loss"),
        "predictions.png": plots.predictions_figure(
            arrays.x_test[picks], arrays.y_test[picks], probabilities[picks]
        ),
        "confusion_matrix.png": plots.confusion_matrix_figure(
            np.array(metrics["confusion_matrix"])
        ),
    }
    for name, fig in figures.items():
        plots.save_figure(fig, out_dir / name)


def commit_outputs(staging: Path, run_dir: Path) -> None:
    """Move a complete set of staged outputs into the run directory.

    Everything is first written to ``staging``, so a crash before this point leaves an
    earlier finished run untouched. The old report goes first and the new one is written
    after the moves: a report never sits beside files it does not describe.
    """
    from job.report import REPORT_FILENAME

    (run_dir / REPORT_FILENAME).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        path.replace(run_dir / path.name)
    staging.rmdir()


def load_trained_model(run_dir: Path):
    """Load ``model.keras`` from a run with safe_mode (no arbitrary code from the file)."""
    import keras

    path = run_dir / MODEL_FILENAME
    if not path.is_file():
        raise JobError(f"{path}: no trained model (is {run_dir} a finished run?)")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise JobError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from None
