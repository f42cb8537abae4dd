"""Distribution: one process, several GPUs of one machine (mirrored), or several workers.

``train.LocalLoop`` trains single-device runs and Keras' ``fit`` mirrored ones. Keras 3's
``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585,
tensorflow/tensorflow#72388), so multi-worker runs use ``train_multi_worker``: a custom
step run with ``strategy.run`` over ``experimental_distribute_dataset``, with the same
model, optimizer and loss built under ``strategy.scope()``. All three produce the same
TrainResult, so there is one model definition and one report for every mode.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from job.errors import JobError

log = logging.getLogger(__name__)


def _tf_config() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError:
        raise JobError("TF_CONFIG is not valid JSON") from None


def _cluster_size(cluster: dict) -> int:
    """Workers that train: the chief (if any) and the workers."""
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def _under_slurm() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ


def resolve_mode(mode: str) -> str:
    """``auto``: multi-worker when TF_CONFIG or Slurm name several workers, mirrored with
    several GPUs, otherwise none."""
    if mode != "auto":
        return mode
    if _cluster_size(_tf_config().get("cluster", {})) > 1 or (
        not os.environ.get("TF_CONFIG") and _under_slurm()
    ):
        return "multi-worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "none"


STRATEGY_NAMES = {
    "none": "none",
    "mirrored": "MirroredStrategy",
    "multi-worker": "MultiWorkerMirroredStrategy",
}


def make_strategy(mode: str, per_replica_batch: int) -> tuple[dict, tf.distribute.Strategy]:
    """Return (what the report records, the strategy). ``--batch-size`` is per replica.

    Raises:
        JobError: multi-worker without a cluster description.
    """
    resolved = resolve_mode(mode)
    workers = 1
    if resolved == "none":
        strategy = tf.distribute.get_strategy()
    elif resolved == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        if _cluster_size(_tf_config().get("cluster", {})) >= 1:
            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        elif _under_slurm():
            resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        else:
            raise JobError("--distribute multi-worker: set TF_CONFIG, or run under srun")
        workers = _cluster_size(resolver.cluster_spec().as_dict())
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    replicas = strategy.num_replicas_in_sync
    return {
        "strategy": STRATEGY_NAMES[resolved],
        "mode": resolved,
        "replicas": replicas,
        "workers": workers,
        "global_batch_size": per_replica_batch * replicas,
        "per_replica_batch_size": per_replica_batch,
    }, strategy


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief (or worker 0 when the cluster has no chief) writes the outputs."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def work_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes checkpoints: the run directory for the chief, a temporary
    folder of its own for every other worker (TensorFlow's multi-worker guide: workers
    must write, but not to the same place as the chief)."""
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return run_dir / f".worker-{resolver.task_type}-{resolver.task_id}"


def cleanup_worker_dir(work: Path, run_dir: Path) -> None:
    if work != run_dir:
        shutil.rmtree(work, ignore_errors=True)


def train_multi_worker(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    train_ds: tf.data.Dataset,
    epochs: int,
    run_dir: Path,
    work: Path,
    global_batch: int,
):
    """Custom training loop for MultiWorkerMirroredStrategy, resumable from a checkpoint.

    Every worker restores from the chief's checkpoint in ``run_dir/backup`` (a shared file
    system, as on Kubernetes volumes and Slurm home directories) and saves each epoch; only
    the chief's copy is kept.
    """
    from job.errors import Preempted
    from job.train import (
        BACKUP_DIRNAME,
        HISTORY_FILENAME,
        EpochLog,
        PreemptionGuard,
        TrainResult,
        epoch_logs,
        loss_and_correct,
    )

    optimizer = model.optimizer
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)
    latest = tf.train.latest_checkpoint(str(run_dir / BACKUP_DIRNAME))
    if latest:
        checkpoint.restore(latest)
        log.info("resuming from %s at epoch %d", latest, int(epoch_var.numpy()))
    manager = tf.train.CheckpointManager(checkpoint, str(work / BACKUP_DIRNAME), max_to_keep=1)
    resumed_from = int(epoch_var.numpy())
    dist_ds = strategy.experimental_distribute_dataset(train_ds)

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            loss_sum, correct = loss_and_correct(labels, model(images, training=True))
            loss = loss_sum / global_batch  # this replica's share of the global batch mean
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss_sum, correct, tf.cast(tf.shape(labels)[0], tf.float32)

    @tf.function
    def train_step(images, labels):
        sums = strategy.run(replica_step, args=(images, labels))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    epoch_log = EpochLog(work / HISTORY_FILENAME)
    guard = PreemptionGuard()
    guard.install()
    started = time.perf_counter()
    try:
        for epoch in range(resumed_from, epochs):
            epoch_log.on_epoch_begin(epoch)
            totals = tf.zeros(3)
            for images, labels in dist_ds:
                totals += tf.stack(train_step(images, labels))
                if guard.requested:
                    raise Preempted(
                        "SIGTERM received: stopped; the last checkpoint is kept, "
                        "run the same command again to resume"
                    )
            metrics = epoch_logs(totals.numpy())
            epoch_log.on_epoch_end(epoch, metrics)
            log.info(
                "epoch %d/%d - loss %.4f - accuracy %.4f",
                epoch + 1,
                epochs,
                metrics["loss"],
                metrics["accuracy"],
            )
            epoch_var.assign(epoch + 1)
            manager.save()  # every worker saves (a collective); only the chief's path is kept
    finally:
        guard.uninstall()
    seconds = time.perf_counter() - started
    if is_chief(strategy):
        shutil.rmtree(run_dir / BACKUP_DIRNAME, ignore_errors=True)
    history = epoch_log.history(epochs) if is_chief(strategy) else []
    return TrainResult(history, seconds, resumed_from, None)
