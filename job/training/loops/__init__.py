"""The three training loops side by side, behind one call: ``train_model``.

- ``local``: the job's own loop for one device (``local.LocalLoop``); on CPU each batch is
  cut into slices that run side by side.
- ``keras-fit``: Keras' ``fit``, which a MirroredStrategy needs (``keras_fit``).
- ``multi-worker``: a custom loop under MultiWorkerMirroredStrategy, where Keras 3's ``fit``
  fails (``multi_worker``).

All three train the same compiled model, write the same ``history.json``, resume after a
preemption, and return the same ``TrainResult``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from job.rundir import BACKUP_DIRNAME, HISTORY_FILENAME, TENSORBOARD_DIRNAME
from job.tensorboard import EpochSummaries
from job.training.callbacks import (
    EpochBackup,
    EpochLog,
    PreemptionGuard,
    early_stopping,
)
from job.training.loops.keras_fit import run_keras_fit
from job.training.loops.local import run_local_loop
from job.training.loops.multi_worker import train_multi_worker
from job.training.loops.result import TrainResult

__all__ = ["LOOPS", "TrainResult", "loop_for", "train_model"]

log = logging.getLogger(__name__)

LOOPS = ("local", "keras-fit", "multi-worker")


def loop_for(mode: str) -> str:
    """The loop that trains under a resolved distribution mode."""
    return {"none": "local", "mirrored": "keras-fit", "multi-worker": "multi-worker"}[mode]


def train_model(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    epochs: int,
    run_dir: Path,
    early_stopping_patience: int | None = None,
    verbose: int | None = None,
    loop: str = "local",
    shards: int = 1,
    strategy: tf.distribute.Strategy | None = None,
    global_batch: int | None = None,
) -> TrainResult:
    """Fit ``model`` with the named loop, resuming from ``run_dir/backup`` after a cut-off.

    Args:
        loop: one of LOOPS. ``shards`` applies to ``local``; ``strategy`` and
            ``global_batch`` to ``multi-worker``.

    The backup stays after training (``rundir.remove_backup`` removes it once the run is
    committed): a rerun after a later failure skips training.

    Raises:
        Preempted: SIGTERM arrived; the backup of the last finished epoch is kept.
    """
    if loop not in LOOPS:
        raise ValueError(f"unknown training loop {loop!r}")
    if loop == "multi-worker":
        return train_multi_worker(strategy, model, train_ds, epochs, run_dir, global_batch)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2  # a bar on a terminal, a line per epoch in logs
    epoch_log = EpochLog(run_dir / HISTORY_FILENAME)
    summaries = EpochSummaries(run_dir / TENSORBOARD_DIRNAME, epoch_log)
    guard = PreemptionGuard()
    backup = EpochBackup(run_dir / BACKUP_DIRNAME)
    # EpochLog runs before the backup: a crash between the two re-runs the epoch and
    # overwrites its log entry, never the reverse (a backed-up epoch with no log entry).
    # The summaries read the log's entry, so TensorBoard and the report agree.
    callbacks: list[keras.callbacks.Callback] = [guard, epoch_log, summaries, backup]
    stopper = None
    if early_stopping_patience and val_ds is not None:
        stopper = early_stopping(early_stopping_patience, epochs)
        callbacks.append(stopper)
    finished = backup.finished(model)
    if finished is not None:
        log.info("training had finished; going straight to evaluation (%s)", backup.backup_dir)
        summaries.restart(finished["epochs_run"])
        summaries.close()
        return TrainResult(
            history=epoch_log.history(finished["epochs_run"]),
            seconds=finished["seconds"],
            resumed_from_epoch=finished["epochs_run"],
            stopped_early_at=finished["stopped_early_at"],
        )
    resumed_from = backup.restore(model)
    if resumed_from:
        log.info("resuming after epoch %d from %s", resumed_from, run_dir / BACKUP_DIRNAME)
    summaries.restart(resumed_from)
    run = run_local_loop if loop == "local" else run_keras_fit
    guard.install()
    started = time.perf_counter()
    try:
        run(model, train_ds, val_ds, epochs, resumed_from, callbacks, verbose, shards=shards)
    finally:
        guard.uninstall()
    seconds = time.perf_counter() - started
    # Fewer epochs than asked only when early stopping ended training.
    epochs_run = epoch_log.epochs_run(epochs)
    stopped_at = epochs_run if stopper is not None and epochs_run < epochs else None
    result = TrainResult(
        history=epoch_log.history(stopped_at or epochs),
        seconds=seconds,
        resumed_from_epoch=resumed_from,
        stopped_early_at=stopped_at,
    )
    backup.save_finished(
        model,
        {"epochs_run": stopped_at or epochs, "seconds": seconds, "stopped_early_at": stopped_at},
    )
    return result
