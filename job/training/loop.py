"""One replica step and one loop for every strategy, driving Keras' callbacks: Keras 3's
``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585, docs/clusters.md)."""

import functools
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.errors import WorkerLost
from job.rundir import BACKUP_DIRNAME, HISTORY_FILENAME, TENSORBOARD_DIRNAME
from job.tensorboard import EpochSummaries
from job.training import strategies
from job.training.callbacks import EpochBackup, EpochLog, PreemptionGuard
from job.training.inputs import batches

log = logging.getLogger(__name__)

# A peer gone: its connection closed, the health check's abort, or a timeout.
errors = tf.errors
PEER_FAILURES = (errors.UnavailableError, errors.DeadlineExceededError, errors.AbortedError)


@dataclass
class TrainResult:
    history: list[dict]  # one entry per epoch, in order, each exactly once
    seconds: float  # wall time of training in this process
    resumed_from_epoch: int  # 0 for a fresh run
    writes_outputs: bool = True  # False on multi-worker workers other than the chief


def loss_and_correct(labels, probabilities, weights=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Summed cross-entropy (the compiled loss) and correct answers, each example weighted."""
    labels = tf.cast(labels, tf.int64)
    probabilities = tf.cast(probabilities, tf.float32)  # float16 under mixed precision
    losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), labels), tf.float32)
    if weights is not None:
        losses, correct = losses * weights, correct * weights
    return tf.reduce_sum(losses), tf.reduce_sum(correct)


def epoch_logs(totals, prefix: str = "") -> dict[str, float]:
    """Mean loss and accuracy from summed (loss, correct, examples), as Keras names them."""
    loss_sum, correct, count = (float(v) for v in totals)
    return {f"{prefix}accuracy": correct / count, f"{prefix}loss": loss_sum / count}


class Trainer:
    """Train a compiled model under ``strategy``, ``steps_per_execution`` steps per graph call,
    each batch cut into ``shards`` slices run side by side (docs/performance.md)."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy, shards: int = 1):
        self.model = model
        self.strategy = strategy
        self.shards = shards
        self.replicas = strategy.num_replicas_in_sync
        self._gradients = self._gradients_fn
        if model.jit_compile:  # --jit: XLA compiles each replica's forward and backward pass
            self._gradients = tf.function(self._gradients_fn, jit_compile=True)
        # (iterator, steps) -> summed (loss, correct, examples) over ``steps`` steps.
        self._train_steps = tf.function(functools.partial(self._run_steps, self.replica_step))
        self._eval_steps = tf.function(functools.partial(self._run_steps, self._eval_step))

    def _slices(self, images: tf.Tensor, labels: tf.Tensor):
        """``shards`` equal slices, weighted 0 on the padding of a short last batch: a slice is
        never empty (oneDNN's max-pool gradient aborts the process on an empty batch)."""
        if self.shards == 1:
            return [(images, labels, None)]
        count = tf.shape(labels)[0]
        pad = (self.shards - count % self.shards) % self.shards
        weights = tf.pad(tf.ones([count]), [[0, pad]])
        images = tf.pad(images, [[0, pad]] + [[0, 0]] * (len(images.shape) - 1))
        labels = tf.pad(labels, [[0, pad]])
        return zip(*(tf.split(t, self.shards) for t in (images, labels, weights)), strict=True)

    def _gradients_fn(self, images, labels, divisor):
        optimizer = self.model.optimizer
        with tf.GradientTape() as tape:
            sums = [
                loss_and_correct(y, self.model(x, training=True), w)
                for x, y, w in self._slices(images, labels)
            ]
            loss_sum = tf.add_n([loss for loss, _ in sums])
            # Mixed precision: the LossScaleOptimizer scales here and unscales in apply.
            scaled = optimizer.scale_loss(loss_sum / divisor)
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        return gradients, loss_sum, tf.add_n([correct for _, correct in sums])

    def replica_step(self, images, labels) -> tf.Tensor:
        """One step on this replica's share; returns its summed (loss, correct, examples)."""
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        # The loss sum over the global batch, as fit divides it; the optimizer sums replicas.
        gradients, loss_sum, correct = self._gradients(images, labels, count * self.replicas)
        self.model.optimizer.apply(gradients, self.model.trainable_variables)
        return tf.stack([loss_sum, correct, count])

    def _eval_step(self, images, labels) -> tf.Tensor:
        loss_sum, correct = loss_and_correct(labels, self.model(images, training=False))
        return tf.stack([loss_sum, correct, tf.cast(tf.shape(labels)[0], tf.float32)])

    def _run_steps(self, step, iterator, steps: tf.Tensor) -> tf.Tensor:
        totals = tf.zeros(3)
        for _ in tf.range(steps):
            per_replica = self.strategy.run(step, args=next(iterator))
            totals += self.strategy.reduce("SUM", per_replica, axis=None)
        return totals

    def _call(self, steps_fn, iterator, steps: tf.Tensor) -> np.ndarray:
        """Run ``steps_fn``; a collective op failed by another worker becomes WorkerLost."""
        try:
            return steps_fn(iterator, steps).numpy()
        except PEER_FAILURES as exc:
            if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
                raise
            raise WorkerLost(
                f"{strategies.lost_worker(self.strategy, exc)} stopped answering: training "
                "stopped; the backup is kept, run the same command again to resume"
            ) from None

    def iterate(self, ds: tf.data.Dataset):
        """One iterator over ``ds`` repeated, for the whole run, split among the replicas."""
        return iter(self.strategy.experimental_distribute_dataset(ds.repeat()))

    def fit(self, train_ds, val_ds, epochs, initial_epoch, callbacks, verbose) -> float:
        """Train from ``initial_epoch`` to ``epochs``; returns the seconds it took."""
        started = time.perf_counter()
        with PreemptionGuard() as guard:
            steps, chunk = batches(train_ds), self.model.steps_per_execution
            hooks = keras.callbacks.CallbackList(
                [guard, *callbacks],
                add_progbar=verbose != 0,
                model=self.model,
                verbose=verbose,
                epochs=epochs,
                steps=steps,
            )
            train_it = self.iterate(train_ds)
            if val_ds is not None:
                val_it, val_steps = self.iterate(val_ds), tf.constant(batches(val_ds), tf.int64)
            hooks.on_train_begin()
            logs: dict[str, float] = {}
            for epoch in range(initial_epoch, epochs):
                hooks.on_epoch_begin(epoch)
                totals = np.zeros(3)
                for first in range(0, steps, chunk):
                    hooks.on_train_batch_begin(first)
                    run = min(chunk, steps - first)
                    totals += self._call(self._train_steps, train_it, tf.constant(run, tf.int64))
                    logs = epoch_logs(totals)
                    hooks.on_train_batch_end(first + run - 1, logs)
                if val_ds is not None:
                    logs |= epoch_logs(self._call(self._eval_steps, val_it, val_steps), "val_")
                hooks.on_epoch_end(epoch, logs)
            hooks.on_train_end(logs)
        return time.perf_counter() - started


def train_model(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    epochs: int,
    run_dir: Path,
    strategy: tf.distribute.Strategy | None = None,
    shards: int = 1,
) -> TrainResult:
    """Fit ``model``, every worker resuming from the chief's ``run_dir/backup`` (kept until the
    run is committed); raises Preempted on SIGTERM, the last finished epoch's backup kept."""
    strategy = strategy or tf.distribute.get_strategy()
    chief = strategies.is_chief(strategy)
    work = run_dir  # where this process backs up: the chief's run directory, or its own folder
    if not chief:
        resolver = strategy.cluster_resolver
        work = run_dir / f".worker-{resolver.task_type}-{resolver.task_id}"
    # A bar on a terminal, a line per epoch in logs; the chief alone speaks.
    verbose = (1 if sys.stdout.isatty() else 2) if chief else 0
    epoch_log = EpochLog(work / HISTORY_FILENAME)
    backup = EpochBackup(run_dir / BACKUP_DIRNAME, work / BACKUP_DIRNAME)
    summaries = EpochSummaries(run_dir / TENSORBOARD_DIRNAME, epoch_log) if chief else None
    with strategy.scope():  # optimizer variables are made under the strategy, for restore
        model.optimizer.build(model.trainable_variables)
    finished = backup.finished(model)
    resumed_from = finished["epochs_run"] if finished else backup.restore(model)
    if summaries:
        summaries.restart(resumed_from)
    if finished:
        log.info("training had finished; going straight to evaluation (%s)", backup.restore_dir)
        seconds = finished["seconds"]
    else:
        if resumed_from:
            log.info("resuming after epoch %d from %s", resumed_from, backup.restore_dir)
        # EpochLog runs before the backup: a crash between the two re-runs the epoch and
        # overwrites its log entry, never the reverse (a backed-up epoch with no log entry).
        callbacks = [epoch_log, *([summaries] if summaries else []), backup]
        trainer = Trainer(model, strategy, shards)
        seconds = trainer.fit(train_ds, val_ds, epochs, resumed_from, callbacks, verbose)
        backup.save_finished(model, {"epochs_run": epochs, "seconds": seconds})
    if summaries:
        summaries.close()
    if not chief:  # the chief's backup stays until the run is committed
        shutil.rmtree(work, ignore_errors=True)
        return TrainResult([], seconds, resumed_from, writes_outputs=False)
    return TrainResult(epoch_log.history(epochs), seconds, resumed_from)
