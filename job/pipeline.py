"""One training run, stage by stage: data -> model -> train -> evaluate -> report/plots -> export.

Outputs are staged and moved into the run directory at the end, ``metrics.json`` last: a
run directory with a report is a finished run.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from job import data as data_stage
from job import rundir
from job.config import JobConfig, Recipe, TrainConfig, recipe_named
from job.errors import JobError
from job.export.versions import check_version_free
from job.files import save_keras_atomic
from job.training import cluster

log = logging.getLogger(__name__)

FIGURES = ("accuracy.png", "loss.png", "predictions.png", "confusion_matrix.png")


def load_data(config: JobConfig) -> data_stage.Dataset:
    dataset = data_stage.load_mnist(config.data_path, config.cache_dir, config.allow_network)
    limit, available = config.train.limit, len(dataset.arrays.x_train)
    if limit is not None and limit > available:
        raise JobError(f"--limit {limit} is larger than the {available} training images")
    return dataset


def prepare_arrays(arrays: data_stage.MnistArrays, t: TrainConfig):
    """Scale to [0, 1], add the channel axis, hold out validation. Returns
    ((x_fit, y_fit), validation or None, x_test)."""
    from job.training import inputs

    x_train, x_test = data_stage.scale_mnist_data(arrays.x_train[: t.limit], arrays.x_test)
    x_train, x_test = data_stage.add_channel_axis(x_train), data_stage.add_channel_axis(x_test)
    fit, validation = inputs.split_validation(
        x_train, arrays.y_train[: t.limit], t.validation_split
    )
    return fit, validation, x_test


def recipe_settings(recipe: Recipe) -> dict:
    """What the recipe sets beyond ``config.train`` (which has its name, epochs, batch and
    split): every other field of the recipe."""
    in_config = {field.name for field in dataclasses.fields(TrainConfig)} | {"name"}
    return {k: v for k, v in dataclasses.asdict(recipe).items() if k not in in_config}


def run_training(config: JobConfig) -> dict:
    """Train, evaluate, write figures, model, export and report. Returns the report
    (empty on multi-worker workers other than the chief, which write nothing)."""
    role = cluster.this_role()
    lock_suffix = "" if role.is_chief else role.label
    with rundir.claim(config.run_dir, config.overwrite, config.new_run_dir, lock_suffix) as held:
        return _run(config, held)


def _run(config: JobConfig, held: rundir.Claim) -> dict:
    started = time.perf_counter()
    t = config.train
    if config.export and config.export_version is not None:
        check_version_free(config.export_dir, config.export_version)  # before, not after
    dataset = load_data(config)

    # TensorFlow is imported only now, after the cheap checks, so bad input fails fast.
    from job import evaluate, gate, model, pages, report, tensorboard
    from job.export import model_card, savedmodel
    from job.training import devices, inputs, loops, optimizer, strategies

    used = devices.select_device(t.device)
    devices.configure_threads(used)
    # A multi-worker strategy must exist before anything starts TensorFlow's runtime.
    strategy_info, strategy = strategies.make_strategy(t.distribute, t.batch_size)
    device_info = devices.configure_runtime(
        t.device, used, t.mixed_precision, t.deterministic, t.seed
    )

    (x_fit, y_fit), validation, x_test = prepare_arrays(dataset.arrays, t)
    recipe = recipe_named(t.recipe)
    global_batch = strategy_info["global_batch_size"]
    train_ds = inputs.make_dataset(x_fit, y_fit, global_batch, t.seed, recipe.translate_pixels)
    val_ds = inputs.make_dataset(*validation, global_batch) if validation else None
    steps = inputs.steps_per_epoch(len(x_fit), global_batch)

    with strategy.scope():
        net = model.get_model(x_fit.shape[1:])
        model.compile_model(
            net,
            optimizer=optimizer.make_optimizer(recipe, steps, t.epochs),
            steps_per_execution=t.steps_per_execution,
            jit_compile=t.jit,
        )

    held.mark_started()
    loop = loops.loop_for(strategy_info["mode"])
    shards = devices.batch_shards(used, global_batch) if loop == "local" else 1
    result = loops.train_model(
        net,
        train_ds,
        val_ds,
        t.epochs,
        config.run_dir,
        recipe.early_stopping_patience,
        loop=loop,
        shards=shards,
        strategy=strategy,
        global_batch=global_batch,
    )
    if not result.writes_outputs:
        return {}

    y_test = dataset.arrays.y_test
    test_loss, test_accuracy, probabilities = evaluate.evaluate_on_test(
        net, x_test, y_test, keras_evaluate=loop != "multi-worker"
    )
    metrics = evaluate.compute_metrics(y_test, probabilities)

    staging = rundir.fresh_staging(config.run_dir)
    write_figures(staging, result.history, dataset.arrays, probabilities, metrics, t.seed)
    save_keras_atomic(net, staging / rundir.MODEL_FILENAME)
    tensorboard.write_run_summary(
        config.run_dir / rundir.TENSORBOARD_DIRNAME,
        {name: (staging / name).read_bytes() for name in FIGURES},
        tensorboard.hparams_of(config.to_dict()["train"]),
        test_accuracy,
        test_loss,
        run_name=config.run_dir.name,
    )

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
            "recipe": recipe_settings(recipe),
            "history": result.history,
            "resumed_from_epoch": result.resumed_from_epoch,
            "stopped_early_at": result.stopped_early_at,
            "peak_gpu_memory_mb": devices.peak_gpu_memory_mb(used),
        },
        "test": {
            "loss": test_loss,
            **metrics,
            "accuracy": test_accuracy,
            "predicted_accuracy": metrics["accuracy"],
        },
    }
    blessing = None
    if config.export:
        blessing = gate.decide(
            test_accuracy,
            config.export_dir,
            config.min_test_accuracy,
            config.gate,
            config.gate_tolerance,
        )
    export_path = None
    if blessing and blessing["blessed"]:
        export_path = savedmodel.export_for_serving(
            net,
            config.export_dir,
            config.export_version,
            run_info={k: summary[k] for k in ("config", "data", "model")}
            | {"test": {"loss": test_loss, "accuracy": test_accuracy}},
            model_card=model_card.build_card(
                summary, model_card.measure_limits(net, dataset.arrays.x_test, y_test)
            ),
        )
    full = report.build_report(
        **summary,
        timings=timings(result, len(x_fit), time.perf_counter() - started),
        artifacts={
            "model": rundir.MODEL_FILENAME,
            "figures": list(FIGURES),
            "export": str(export_path) if export_path else None,
        },
        blessing=blessing,
    )
    pages.write_run_page(
        staging / pages.PAGE_FILENAME, full, {n: (staging / n).read_bytes() for n in FIGURES}
    )
    rundir.commit_outputs(staging, config.run_dir)
    report.write_report(config.run_dir, full)
    rundir.remove_backup(config.run_dir)
    log.info(
        "test accuracy %.4f, loss %.4f; report in %s",
        test_accuracy,
        test_loss,
        config.run_dir / report.REPORT_FILENAME,
    )
    if blessing:
        gate.refuse_unblessed(blessing, config.export_dir)  # after the report: it says why
    return full


def timings(result, train_examples: int, total_seconds: float) -> dict:
    """The report's timings: every epoch, the median, and examples per second at the median."""
    epoch_seconds = [e["seconds"] for e in result.history]
    median_epoch = statistics.median(epoch_seconds)
    return {
        "total_seconds": total_seconds,
        "train_seconds": result.seconds,
        "epoch_seconds": epoch_seconds,
        "median_epoch_seconds": median_epoch,
        "examples_per_second": train_examples / median_epoch if median_epoch else 0.0,
    }


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
