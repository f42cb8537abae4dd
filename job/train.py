"""Fit: device choice, the tf.data input pipeline, callbacks, preemption and resume."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from job.config import Recipe
from job.errors import JobError, Preempted
from job.files import save_keras_atomic, write_json_atomic

log = logging.getLogger(__name__)

BACKUP_DIRNAME = "backup"
PREFETCH_BATCHES = 4
HISTORY_FILENAME = "history.json"
MIN_SHARD_EXAMPLES = 16  # a batch is cut into slices of at least this many examples


# --------------------------------------------------------------------------- devices


def select_device(device: str) -> str:
    """Make only the chosen device kind visible; returns "cpu" or "gpu".

    Touches no TensorFlow context, so a multi-worker strategy can still be created after.

    Raises:
        JobError: ``device == "gpu"`` and no GPU is visible.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise JobError("--device gpu: no GPU is visible to TensorFlow (try --device auto or cpu)")
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    return "gpu" if gpus and device != "cpu" else "cpu"


def configure_threads(used: str) -> None:
    """On CPU: one thread per op, and as many ops (and input-pipeline work) side by side as
    there are cores. This model's ops are small: splitting each across two cores cost more
    in hand-offs than it saved (about a third slower per epoch on the 2-core machine). An
    integer in TensorFlow's own ``TF_NUM_INTRAOP_THREADS`` or ``TF_NUM_INTEROP_THREADS``
    wins; on GPU TensorFlow's defaults stay.
    """
    if used != "cpu":
        return
    wanted = {
        "TF_NUM_INTRAOP_THREADS": (tf.config.threading.set_intra_op_parallelism_threads, 1),
        "TF_NUM_INTEROP_THREADS": (
            tf.config.threading.set_inter_op_parallelism_threads,
            os.cpu_count() or 1,
        ),
    }
    for variable, (setter, count) in wanted.items():
        given = os.environ.get(variable, "")
        try:
            setter(int(given) if given.isdigit() else count)
        except RuntimeError:  # runtime already started (a second run in one process)
            log.debug("%s: thread pools already created; left as they are", variable)


def configure_runtime(
    requested: str, used: str, mixed_precision: bool, deterministic: bool, seed: int
) -> dict:
    """Seed everything, set the precision policy and determinism; returns the report's view."""
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU") if used == "gpu" else []
    return {
        "requested": requested,
        "used": used,
        "logical_devices": [d.name for d in tf.config.list_logical_devices()],
        "gpus": [
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ],
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "precision_policy": keras.mixed_precision.global_policy().name,
        "deterministic": deterministic,
        "threads": {  # 0: TensorFlow's default (one per core)
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }


def batch_shards(used: str, batch_size: int) -> int:
    """How many slices each batch is cut into, to run side by side: on CPU, one per
    inter-op thread (one per core by default), each at least MIN_SHARD_EXAMPLES examples;
    on GPU one. The gradient of the batch is the sum over its slices, so this changes how
    the work is spread over the cores, not the math."""
    if used != "cpu":
        return 1
    threads = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1
    return max(1, min(threads, batch_size // MIN_SHARD_EXAMPLES))


# --------------------------------------------------------------------------- input pipeline


def split_validation(
    images: np.ndarray, labels: np.ndarray, fraction: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Hold out the last ``fraction`` of the training set, as Keras' validation_split does."""
    if fraction <= 0:
        return (images, labels), None
    n_val = max(1, int(round(len(images) * fraction)))
    return (images[:-n_val], labels[:-n_val]), (images[-n_val:], labels[-n_val:])


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None = None,
    translate_pixels: int = 0,
) -> tf.data.Dataset:
    """Batches of (images, labels), reshuffled each epoch when seeded, prefetched.

    The arrays stay in memory as two tensors. Each epoch draws one seed (``Dataset.random``
    re-randomizes on every iteration), shuffles the whole index range in one op, and each
    batch is one gather from that order: the same per-epoch shuffle as a ``shuffle`` buffer
    of every example, without pushing 60,000 examples through the pipeline one at a time
    (a buffer refill cost about 0.5 s at the start of every epoch on the 2-core machine).
    ``translate_pixels``: each batch's images are shifted at random (``random_shifts``), with
    a seed drawn from the epoch's, so a run's shifts follow ``shuffle_seed``.
    """
    if translate_pixels and shuffle_seed is None:
        raise ValueError("random shifts need a shuffle seed (they are drawn from it)")
    images_t, labels_t = tf.constant(images), tf.constant(labels.astype(np.int64))
    count = len(images)
    if shuffle_seed is None:
        ds = tf.data.Dataset.from_tensor_slices((images_t, labels_t)).batch(batch_size)
    else:

        def one_epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(count, dtype=tf.int64),
                seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)]),
            )

            def batch_at(start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                idx = order[start : start + batch_size]
                images = tf.gather(images_t, idx)
                if translate_pixels:  # a seed of its own per batch: [epoch seed, 1 + start]
                    seed = tf.stack([epoch_seed, start + 1])
                    images = random_shifts(images, translate_pixels, seed)
                return images, tf.gather(labels_t, idx)

            return tf.data.Dataset.range(0, count, batch_size).map(
                batch_at, num_parallel_calls=os.cpu_count() if translate_pixels else None
            )

        epoch_seed = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True)
        ds = epoch_seed.take(1).flat_map(one_epoch)
        # flat_map hides the length; Keras wants it to size epochs without a warning.
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(count, batch_size)))
    options = tf.data.Options()
    # Each worker reads the whole index range and keeps every Nth batch: sharding by DATA
    # works on any source (there are no files to split by).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # Fixed sizes instead of AUTOTUNE: deleting an autotuned iterator waits for its tuning
    # thread, which sleeps longer the longer the iterator lived (16 s after 25 s of use
    # here, TF 2.21), and a run ends with that delete. Autotuning bought nothing measurable.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


def random_shifts(images: tf.Tensor, pixels: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image of a batch by its own whole number of pixels, up to ``pixels`` each
    way on each axis, filling with zeros. Stateless: the same seed, the same shifts.

    Each axis is five (for 2 pixels) slices of the padded batch, each weighted by a 0/1
    mask of the examples that drew that offset: about half the CPU time of Keras'
    ``RandomTranslation`` (a bilinear projective transform) on this model's batches.
    """
    count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    choices = 2 * pixels + 1
    offsets = tf.random.stateless_uniform(
        [2, count], seed=seed, minval=0, maxval=choices, dtype=tf.int32
    )
    padded = tf.pad(images, [[0, 0], [pixels, pixels], [pixels, pixels], [0, 0]])

    def drew(axis: int, offset: int) -> tf.Tensor:
        return tf.reshape(tf.cast(tf.equal(offsets[axis], offset), images.dtype), [-1, 1, 1, 1])

    rows = tf.add_n([drew(0, i) * padded[:, i : i + height] for i in range(choices)])
    return tf.add_n([drew(1, j) * rows[:, :, j : j + width] for j in range(choices)])


def make_optimizer(recipe: Recipe, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """Adam with default settings, or (fast recipe) with warm-up plus cosine decay."""
    if not recipe.warmup_cosine:
        return keras.optimizers.Adam()
    warmup = steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.peak_learning_rate / 10,
        decay_steps=max(1, steps_per_epoch * epochs - warmup),
        warmup_target=recipe.peak_learning_rate,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(learning_rate=schedule)


# --------------------------------------------------------------------------- callbacks


class EpochLog(keras.callbacks.Callback):
    """Keeps every finished epoch's metrics and duration in ``history.json``, across restarts.

    Keras' History only holds the epochs of the current ``fit`` call; after a resume the
    earlier ones are gone. This log is keyed by epoch number, so an epoch that is run again
    after a crash replaces its earlier entry and each epoch appears exactly once.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.epochs: dict[int, dict] = {}
        if path.exists():
            self.epochs = {int(k): v for k, v in json.loads(path.read_text()).items()}
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entry = {k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}
        entry["seconds"] = time.perf_counter() - self._started
        self.epochs[epoch] = entry
        write_json_atomic(self.path, {str(k): v for k, v in sorted(self.epochs.items())})

    def history(self, epochs: int) -> list[dict]:
        missing = [e for e in range(epochs) if e not in self.epochs]
        if missing:
            raise JobError(f"{self.path}: epochs {missing} were never completed")
        return [{"epoch": e + 1, **self.epochs[e]} for e in range(epochs)]


class EpochBackup(keras.callbacks.Callback):
    """Saves model and optimizer state after every epoch, atomically, to resume from.

    Keras' BackupAndRestore writes its files in place: a SIGKILL while it writes leaves a
    truncated file that the next run cannot open (our resume test caught exactly that). Here
    each backup is a complete ``.keras`` file written under a temporary name and renamed to
    ``epoch-NNNN.keras``, so the newest backup is always whole.
    """

    def __init__(self, backup_dir: Path):
        super().__init__()
        self.backup_dir = backup_dir

    def _backups(self) -> list[Path]:
        return sorted(self.backup_dir.glob("epoch-*.keras"))

    def restore(self, model: keras.Model) -> int:
        """Load the newest backup into ``model``; returns how many epochs it had finished."""
        backups = self._backups()
        if not backups:
            return 0
        saved = keras.models.load_model(backups[-1], safe_mode=True)
        model.set_weights(saved.get_weights())
        model.optimizer.build(model.trainable_variables)
        for target, source in zip(
            model.optimizer.variables, saved.optimizer.variables, strict=True
        ):
            target.assign(source)
        return int(backups[-1].stem.split("-")[1])

    def on_epoch_end(self, epoch, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        final = save_keras_atomic(self.model, self.backup_dir / f"epoch-{epoch + 1:04d}.keras")
        for older in self._backups():
            if older != final:
                older.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        shutil.rmtree(self.backup_dir, ignore_errors=True)  # finished: nothing to resume


class PreemptionGuard(keras.callbacks.Callback):
    """On SIGTERM, stop at the next batch without finishing the epoch.

    It raises rather than setting ``stop_training``: a stopped ``fit`` still ends the epoch,
    and the backup would then record a half-trained epoch as done.
    """

    def __init__(self):
        super().__init__()
        self.requested = False
        self._previous = None

    def _on_sigterm(self, signum, frame):
        self.requested = True

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    # Checked before each batch, not after: a callback with an after-batch hook makes Keras
    # wait for every step's metrics (it then turns off its asynchronous callback dispatch).
    def on_train_batch_begin(self, batch, logs=None):
        if self.requested:
            raise Preempted(
                "SIGTERM received: stopped; the last backup is kept, "
                "run the same command again to resume"
            )


# --------------------------------------------------------------------------- the loops


def loss_and_correct(labels, probabilities, weights=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Summed cross-entropy (the compiled loss) and count of correct answers over a batch's
    examples, each weighted by ``weights`` when given. Every training loop reports these."""
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


class LocalLoop:
    """Keras' ``fit`` for one device, cut down to what this job uses, and faster on CPU.

    Each call into TensorFlow runs ``steps_per_execution`` steps in one graph loop that pulls
    batches from the tf.data iterator, as ``fit`` does. What differs: on CPU each batch is
    cut into ``shards`` slices whose forward and backward passes run side by side on the
    inter-op threads (the gradient is the sum over slices, divided by the batch size: the
    same Adam step on the same batch mean as the seed's), and the running loss and accuracy
    are plain loop sums instead of metric objects updated every step. The callbacks are
    Keras' own (``CallbackList``), called as ``fit`` calls them, once per chunk of steps.
    """

    def __init__(self, model: keras.Model, shards: int, steps_per_execution: int):
        self.model = model
        self.shards = shards
        self.steps_per_execution = steps_per_execution
        # --jit: XLA compiles each step; the loop around it pulls from the iterator.
        self._step = (
            tf.function(self._train_step, jit_compile=True)
            if model.jit_compile
            else self._train_step
        )
        self._train_steps = tf.function(self._train_steps_fn)
        self._eval_steps = tf.function(self._eval_steps_fn)

    def _slices(self, images: tf.Tensor, labels: tf.Tensor):
        """``shards`` equal slices of a batch, with per-example weights: 1 for examples, 0 for
        the zero padding that makes a short last batch divide evenly (a slice is never empty:
        oneDNN's max-pool gradient aborts the process on an empty batch)."""
        if self.shards == 1:
            return [(images, labels, None)]
        count = tf.shape(labels)[0]
        pad = (self.shards - count % self.shards) % self.shards
        weights = tf.pad(tf.ones([count]), [[0, pad]])
        images = tf.pad(images, [[0, pad]] + [[0, 0]] * (len(images.shape) - 1))
        labels = tf.pad(labels, [[0, pad]])
        return list(
            zip(
                tf.split(images, self.shards),
                tf.split(labels, self.shards),
                tf.split(weights, self.shards),
                strict=True,
            )
        )

    def _train_step(self, images, labels) -> tf.Tensor:
        optimizer = self.model.optimizer
        variables = self.model.trainable_variables
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        with tf.GradientTape() as tape:
            sums = [
                loss_and_correct(y, self.model(x, training=True), w)
                for x, y, w in self._slices(images, labels)
            ]
            loss_sum = tf.add_n([loss for loss, _ in sums])
            scaled = optimizer.scale_loss(loss_sum / count)  # the batch mean, as in fit
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return tf.stack([loss_sum, tf.add_n([correct for _, correct in sums]), count])

    def _train_steps_fn(self, iterator, steps: tf.Tensor) -> tf.Tensor:
        totals = tf.zeros(3)
        for _ in tf.range(steps):
            images, labels = next(iterator)
            totals += self._step(images, labels)
        return totals

    def _eval_steps_fn(self, iterator, steps: tf.Tensor) -> tf.Tensor:
        totals = tf.zeros(3)
        for _ in tf.range(steps):
            images, labels = next(iterator)
            loss_sum, correct = loss_and_correct(labels, self.model(images, training=False))
            totals += tf.stack([loss_sum, correct, tf.cast(tf.shape(labels)[0], tf.float32)])
        return totals

    def fit(
        self,
        train_ds: tf.data.Dataset,
        val_ds: tf.data.Dataset | None,
        epochs: int,
        initial_epoch: int,
        callbacks: list[keras.callbacks.Callback],
        verbose: int,
    ) -> None:
        steps, chunk = batches(train_ds), self.steps_per_execution
        val_steps = tf.constant(batches(val_ds), tf.int64) if val_ds is not None else None
        hooks = keras.callbacks.CallbackList(
            callbacks,
            add_progbar=verbose != 0,
            model=self.model,
            verbose=verbose,
            epochs=epochs,
            steps=steps,
        )
        # One iterator each for the whole run (see train_model).
        train_it = iter(train_ds.repeat())
        val_it = iter(val_ds.repeat()) if val_ds is not None else None
        self.model.stop_training = False
        hooks.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            hooks.on_epoch_begin(epoch)
            totals = np.zeros(3)
            for first in range(0, steps, chunk):
                hooks.on_train_batch_begin(first)
                run = min(chunk, steps - first)
                totals += self._train_steps(train_it, tf.constant(run, tf.int64)).numpy()
                logs = epoch_logs(totals)
                hooks.on_train_batch_end(first + run - 1, logs)
            if val_it is not None:
                logs |= epoch_logs(self._eval_steps(val_it, val_steps).numpy(), "val_")
            hooks.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        hooks.on_train_end(logs)


@dataclass
class TrainResult:
    history: list[dict]  # one entry per epoch, in order, each exactly once
    seconds: float  # wall time of fit in this process
    resumed_from_epoch: int  # 0 for a fresh run
    stopped_early_at: int | None  # epoch count when early stopping ended training


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
) -> TrainResult:
    """Fit ``model``, resuming from ``run_dir/backup`` if an earlier run was cut off.

    ``loop``: "local" (LocalLoop, for one device, its batches cut into ``shards`` slices)
    or "keras-fit" (Keras' ``fit``, which a MirroredStrategy needs). Both drive the same
    callbacks and give the same history.

    Raises:
        Preempted: SIGTERM arrived; the backup of the last finished epoch is kept.
    """
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2  # a bar on a terminal, a line per epoch in logs
    epoch_log = EpochLog(run_dir / HISTORY_FILENAME)
    guard = PreemptionGuard()
    backup = EpochBackup(run_dir / BACKUP_DIRNAME)
    # EpochLog runs before the backup: a crash between the two re-runs the epoch and
    # overwrites its log entry, never the reverse (a backed-up epoch with no log entry).
    callbacks: list[keras.callbacks.Callback] = [guard, epoch_log, backup]
    stopper = None
    if early_stopping_patience and val_ds is not None:
        # Watched from half-way: in the first half the learning rate is still high and the
        # validation figures jump about, and stopping there cost 0.002 of test accuracy.
        # Validation loss, not accuracy: on 6,000 images accuracy moves in steps of a few
        # examples and stalled for 4 epochs while the decaying rate was still gaining; runs
        # stopped on it scored 0.9893-0.9895, against 0.9900-0.9921 on loss (6 seeds).
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss",
            mode="min",  # said, not guessed from the compiled metrics (LocalLoop has none)
            patience=early_stopping_patience,
            start_from_epoch=epochs // 2,
            restore_best_weights=True,
        )
        callbacks.append(stopper)
    resumed_from = backup.restore(model)
    if resumed_from:
        log.info("resuming after epoch %d from %s", resumed_from, run_dir / BACKUP_DIRNAME)
    guard.install()
    started = time.perf_counter()
    try:
        if loop == "local":
            LocalLoop(model, shards, model.steps_per_execution).fit(
                train_ds, val_ds, epochs, resumed_from, callbacks, verbose
            )
        elif loop == "keras-fit":
            keras_fit(model, train_ds, val_ds, epochs, resumed_from, callbacks, verbose)
        else:
            raise ValueError(f"unknown training loop {loop!r}")
    finally:
        guard.uninstall()
    seconds = time.perf_counter() - started
    # Epochs actually run: fewer than asked only when early stopping ended training.
    epochs_run = min(epochs, max(epoch_log.epochs, default=-1) + 1)
    stopped_at = epochs_run if stopper is not None and epochs_run < epochs else None
    return TrainResult(
        history=epoch_log.history(stopped_at or epochs),
        seconds=seconds,
        resumed_from_epoch=resumed_from,
        stopped_early_at=stopped_at,
    )


def keras_fit(model, train_ds, val_ds, epochs, initial_epoch, callbacks, verbose) -> None:
    model.fit(
        # Repeated, with the epoch length given: Keras then keeps one iterator for the
        # whole run. A new iterator per epoch sometimes stalled for 1-5 s at the start
        # of an epoch on the 2-core machine (the old one's tf.data autotuning thread).
        train_ds.repeat(),
        steps_per_epoch=batches(train_ds),
        initial_epoch=initial_epoch,
        validation_data=val_ds.repeat() if val_ds is not None else None,
        validation_steps=batches(val_ds) if val_ds is not None else None,
        epochs=epochs,
        shuffle=False,
        callbacks=callbacks,
        verbose=verbose,
    )


def batches(ds: tf.data.Dataset) -> int:
    """How many batches one pass over ``ds`` (made by ``make_dataset``) holds."""
    count = int(ds.cardinality())
    if count < 0:
        raise ValueError("the dataset's length is unknown; build it with make_dataset")
    return count


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)
