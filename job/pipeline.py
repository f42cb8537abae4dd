"""One training run, stage by stage: set up, train, evaluate, gate and export, commit, report."""

import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from job import data as data_stage
from job import evaluate as metrics
from job import gate, model, pages, plots, rundir, tensorboard
from job.config import RECIPES, JobConfig, TrainConfig
from job.errors import JobError
from job.export import model_card, savedmodel
from job.export.versions import check_version_free
from job.files import save_keras_atomic
from job.report import SCHEMA_VERSION, environment, timings, write_report
from job.training import cluster, devices, inputs, optimizer, strategies
from job.training.loop import train_model


@dataclass
class Setup:
    dataset: data_stage.Dataset
    device: str  # the one used: cpu or gpu
    distribution: dict
    strategy: object  # tf.distribute.Strategy
    shards: int
    adam_update: str
    net: object  # keras.Model
    train_ds: object  # tf.data.Dataset
    val_ds: object | None
    x_test: np.ndarray
    record: dict  # the run record's environment, data and model (report.RUN_RECORD)


def run_training(config: JobConfig, command: str) -> dict:
    """Every stage; returns the report ({} on a multi-worker worker other than the chief)."""
    role = cluster.this_role(config.environ)
    lock_suffix = "" if role.is_chief else f"{role.task_type}-{role.task_id}"
    with rundir.claim(config.run_dir, config.overwrite, config.new_run_dir, lock_suffix) as held:
        started = time.perf_counter()
        settings = config.to_dict()
        options = rundir.check_same_run(config.run_dir, settings) if role.is_chief else None
        if config.export and config.export_version is not None:
            check_version_free(config.export_dir, config.export_version)  # before, not after
        dataset = data_stage.load_mnist(config.data_path, config.cache_dir, config.allow_network)
        limit, available = config.train.limit, len(dataset.arrays.x_train)
        if limit is not None and limit > available:
            raise JobError(f"--limit {limit} is larger than the {available} training images")
        setup = set_up(config, dataset)
        held.mark_started(options)
        net, train_ds, val_ds = setup.net, setup.train_ds, setup.val_ds
        result = train_model(
            net, train_ds, val_ds, config.train.epochs, config.run_dir, setup.strategy, setup.shards
        )
        if not result.writes_outputs:
            return {}
        staging = rundir.fresh_staging(config.run_dir)
        test, figures = evaluate(config, setup, result, staging)
        record = {"config": settings, **setup.record, "test": test}
        blessing, export_path = gate_and_export(config, setup, record)
        report = build_report(
            command, record, setup, result, figures, blessing, export_path, started
        )
        commit(config, staging, report)
        if blessing:
            gate.refuse_unblessed(blessing, config.export_dir)  # after the report: it says why
        return report


def prepare_arrays(dataset: data_stage.Dataset, t: TrainConfig):
    """Scaled, with a channel axis: ((x_fit, y_fit), validation or None, x_test, data section)."""
    arrays = dataset.arrays
    x_train, x_test = data_stage.scale_mnist_data(arrays.x_train[: t.limit], arrays.x_test)
    x_train, x_test = data_stage.add_channel_axis(x_train), data_stage.add_channel_axis(x_test)
    fit, validation = inputs.split_validation(
        x_train, arrays.y_train[: t.limit], t.validation_split
    )
    data = {
        **dataset.describe(),
        "train_examples": len(fit[0]),
        "validation_examples": len(validation[0]) if validation else 0,
    }
    return fit, validation, x_test, data


def set_up(config: JobConfig, dataset: data_stage.Dataset) -> Setup:
    """Device, threads, strategy, precision and seeds; the input pipelines; the compiled model."""
    t, env = config.train, config.environ
    used = devices.select_device(t.device)
    devices.configure_threads(used, env)
    # A multi-worker strategy must exist before anything starts TensorFlow's runtime.
    distribution, strategy = strategies.make_strategy(t.distribute, t.batch_size, env)
    device_info = devices.configure_runtime(
        t.device, used, t.mixed_precision, t.deterministic, t.seed
    )
    (x_fit, y_fit), validation, x_test, data = prepare_arrays(dataset, t)
    recipe = RECIPES[t.recipe]
    batch = distribution["global_batch_size"]
    train_ds = inputs.make_dataset(x_fit, y_fit, batch, t.seed, recipe.translate_pixels)
    val_ds = inputs.make_dataset(*validation, batch) if validation else None
    steps = inputs.batches(train_ds)
    one_device = distribution["mode"] == "none"
    with strategy.scope():
        net = model.get_model(x_fit.shape[1:])
        adam, adam_update = optimizer.make_optimizer(recipe, steps, t.epochs, fused=one_device)
        model.compile_model(net, adam, steps_per_execution=t.steps_per_execution, jit_compile=t.jit)
    return Setup(
        dataset=dataset,
        device=used,
        distribution=distribution,
        strategy=strategy,
        shards=devices.batch_shards(used, batch) if one_device else 1,
        adam_update=adam_update,
        net=net,
        train_ds=train_ds,
        val_ds=val_ds,
        x_test=x_test,
        record={
            "environment": environment(device_info),
            "data": data,
            "model": {
                "name": net.name,
                "parameters": int(net.count_params()),
                "layers": [layer.__class__.__name__ for layer in net.layers],
            },
        },
    )


def evaluate(config: JobConfig, setup: Setup, result, staging: Path) -> tuple[dict, list[str]]:
    """Test metrics; figures, model.keras and TensorBoard's summary written into ``staging``."""
    arrays, net, t = setup.dataset.arrays, setup.net, config.train
    # One pass over the test set gives the loss and accuracy the seed's model.evaluate reports.
    probabilities = metrics.predict_in_batches(net, setup.x_test)
    test = metrics.compute_metrics(arrays.y_test, probabilities)
    matrix = test["confusion_matrix"]
    figures = plots.save_run_figures(staging, result.history, arrays, probabilities, matrix, t.seed)
    save_keras_atomic(net, staging / rundir.MODEL_FILENAME)
    tensorboard.write_run_summary(
        config.run_dir / rundir.TENSORBOARD_DIRNAME,
        {name: (staging / name).read_bytes() for name in figures},
        asdict(t),
        test,
        run_name=config.run_dir.name,
    )
    return test, figures


def gate_and_export(
    config: JobConfig, setup: Setup, record: dict
) -> tuple[dict | None, Path | None]:
    """The quality gate, then the blessed model's version and card: (blessing, path or None)."""
    if not config.export:
        return None, None
    c = config
    blessing = gate.decide(
        record["test"]["accuracy"], c.export_dir, c.min_test_accuracy, c.gate, c.gate_tolerance
    )
    if not blessing["blessed"]:
        return blessing, None
    arrays = setup.dataset.arrays
    limits = model_card.measure_limits(setup.net, arrays.x_test, arrays.y_test)
    card = model_card.build_card(record, limits)
    path = savedmodel.export_for_serving(setup.net, c.export_dir, c.export_version, record, card)
    return blessing, path


def build_report(
    command: str,
    record: dict,
    setup: Setup,
    result,
    figures: list[str],
    blessing: dict | None,
    export_path: Path | None,
    started: float,
) -> dict:
    """The report (job/schemas/metrics.schema.json), once, from what each stage returned."""
    recipe = asdict(RECIPES[record["config"]["train"]["recipe"]])
    del recipe["name"], recipe["epochs"], recipe["batch_size"]  # the config has these
    epoch_seconds = [e["seconds"] for e in result.history]
    examples, total = record["data"]["train_examples"], time.perf_counter() - started
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        **record,
        "distribution": setup.distribution,
        "training": {
            "batch_shards": setup.shards,
            "adam_update": setup.adam_update,
            "recipe": recipe,
            "history": result.history,
            "resumed_from_epoch": result.resumed_from_epoch,
            "peak_gpu_memory_mb": devices.peak_gpu_memory_mb(setup.device),
        },
        "timings": timings(epoch_seconds, result.seconds, examples, total),
        "artifacts": {
            "model": rundir.MODEL_FILENAME,
            "figures": figures,
            "export": str(export_path) if export_path else None,
        },
        "blessing": blessing,
    }


def commit(config: JobConfig, staging: Path, report: dict) -> None:
    """The run page beside the figures, the staged outputs moved in, the report last."""
    figures = {name: (staging / name).read_bytes() for name in report["artifacts"]["figures"]}
    pages.write_run_page(staging / pages.PAGE_FILENAME, report, figures)
    rundir.commit_outputs(staging, config.run_dir)
    write_report(config.run_dir, report)
    shutil.rmtree(config.run_dir / rundir.BACKUP_DIRNAME, ignore_errors=True)
