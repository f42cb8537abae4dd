"""The job's own loop for one device: Keras' ``fit`` cut down to what this job uses."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from job.training.inputs import batches
from job.training.loops.sums import epoch_logs, loss_and_correct


class LocalLoop:
    """Train on one device, ``steps_per_execution`` steps per call into TensorFlow.

    Each call runs a graph loop that pulls batches from the tf.data iterator, as ``fit``
    does. What differs: on CPU each batch is cut into ``shards`` slices whose forward and
    backward passes run side by side on the inter-op threads (the gradient is the sum over
    slices divided by the batch size: the same Adam step on the same batch mean as the
    seed's), and the running loss and accuracy are plain sums instead of metric objects.
    The callbacks are Keras' own (``CallbackList``), called as ``fit`` calls them, once per
    chunk of steps.
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
        # One iterator each for the whole run, as in run_keras_fit.
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


def run_local_loop(model, train_ds, val_ds, epochs, initial_epoch, callbacks, verbose, shards=1):
    """Train with LocalLoop at the model's compiled ``steps_per_execution``."""
    LocalLoop(model, shards, model.steps_per_execution).fit(
        train_ds, val_ds, epochs, initial_epoch, callbacks, verbose
    )
