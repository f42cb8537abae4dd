"""The loop for MultiWorkerMirroredStrategy.

Keras 3's ``fit`` fails under this strategy (keras-team/keras#20585,
tensorflow/tensorflow#72388), so each step runs with ``strategy.run`` over
``experimental_distribute_dataset``, with the same model, optimizer and loss built under
``strategy.scope()``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import tensorflow as tf

from job.rundir import BACKUP_DIRNAME, HISTORY_FILENAME, TENSORBOARD_DIRNAME
from job.tensorboard import EpochSummaries
from job.training import strategies
from job.training.callbacks import EpochLog, PreemptionGuard, current_learning_rate
from job.training.loops.result import TrainResult
from job.training.loops.sums import epoch_logs, loss_and_correct

log = logging.getLogger(__name__)


def train_multi_worker(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    train_ds: tf.data.Dataset,
    epochs: int,
    run_dir: Path,
    global_batch: int,
) -> TrainResult:
    """Train on every worker, resumable from a checkpoint.

    Every worker restores from the chief's checkpoint in ``run_dir/backup`` (a shared file
    system, as on Kubernetes volumes and Slurm home directories) and saves each epoch to
    its own work folder; only the chief's copy is kept.
    """
    work = strategies.work_dir(run_dir, strategy)
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
    chief = strategies.is_chief(strategy)
    summaries = EpochSummaries(run_dir / TENSORBOARD_DIRNAME, epoch_log) if chief else None
    if summaries is not None:
        summaries.restart(resumed_from)
    guard = PreemptionGuard()
    guard.install()
    started = time.perf_counter()
    try:
        for epoch in range(resumed_from, epochs):
            epoch_log.on_epoch_begin(epoch)
            totals = tf.zeros(3)
            for images, labels in dist_ds:
                totals += tf.stack(train_step(images, labels))
                guard.check()
            metrics = epoch_logs(totals.numpy())
            metrics["learning_rate"] = current_learning_rate(optimizer)
            epoch_log.on_epoch_end(epoch, metrics)
            if summaries is not None:
                summaries.write_epoch(epoch)
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
        if summaries is not None:
            summaries.close()
    seconds = time.perf_counter() - started
    if not chief:  # the chief's checkpoint stays until the run is committed
        strategies.cleanup_worker_dir(work, run_dir)
    history = epoch_log.history(epochs) if chief else []
    return TrainResult(history, seconds, resumed_from, None, writes_outputs=chief)
