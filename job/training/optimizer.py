"""The optimizer each recipe trains with, and the fused Adam update behind its fence."""

import functools
import logging

import keras
import numpy as np
import tensorflow as tf

from job.config import Recipe

log = logging.getLogger(__name__)

FUSED_UPDATE, KERAS_UPDATE = "fused", "keras"  # what the report's training.adam_update says


def make_optimizer(
    recipe: Recipe, steps_per_epoch: int, epochs: int, fused: bool = True
) -> tuple[keras.optimizers.Adam, str]:
    """Adam with defaults, or (fast recipe) warm-up, cosine decay and weight decay; returns it
    and its update: the fused kernel where ``fused`` (one device) and its check pass."""
    learning_rate = recipe.peak_learning_rate  # the default recipe's: Adam's default 0.001
    if recipe.warmup_cosine:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.peak_learning_rate / 10,
            decay_steps=max(1, steps_per_epoch * (epochs - 1)),
            warmup_target=recipe.peak_learning_rate,
            warmup_steps=steps_per_epoch,  # one epoch
        )
    adam = keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=recipe.weight_decay)
    if fused and fused_adam_kernel_works():
        return with_fused_adam_kernel(adam), FUSED_UPDATE
    return adam, KERAS_UPDATE


def with_fused_adam_kernel(optimizer: keras.optimizers.Adam) -> keras.optimizers.Adam:
    """Keras' ``Adam.update_step`` as one ``ResourceApplyAdam`` kernel per variable, not ten
    small ops (docs/performance.md); on this object, so a saved model's is a plain ``Adam``."""

    def update_step(gradient, variable, learning_rate):
        index = optimizer._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(optimizer.iterations + 1, dtype)
        beta_1 = tf.cast(optimizer.beta_1, dtype)
        beta_2 = tf.cast(optimizer.beta_2, dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=optimizer._momentums[index].handle,
            v=optimizer._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(optimizer.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )

    optimizer.update_step = update_step
    return optimizer


@functools.cache
def fused_adam_kernel_works() -> bool:
    """Two Adam steps each way: do the Keras privates the fused kernel reads still fit?"""
    gradients = (tf.constant([0.5, -1.0, 2.0]), tf.constant([-0.25, 3.0, 1.0]))
    try:
        results = []
        for optimizer in (
            keras.optimizers.Adam(0.01),
            with_fused_adam_kernel(keras.optimizers.Adam(0.01)),
        ):
            variable = keras.Variable([1.0, 2.0, 3.0])
            for gradient in gradients:  # two steps: the bias correction changes with each
                optimizer.apply([gradient], [variable])
            results.append(keras.ops.convert_to_numpy(variable))
        if np.allclose(*results, rtol=1e-6, atol=1e-7):
            return True
        reason = f"its step {results[1]} differs from Keras' {results[0]}"
    except Exception as exc:  # noqa: BLE001 - any failure means the internals moved
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("the fused Adam kernel does not fit this Keras (%s); Keras' update runs", reason)
    return False
