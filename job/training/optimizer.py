"""The optimizer each recipe trains with."""

from __future__ import annotations

import keras
import tensorflow as tf

from job.config import Recipe


def make_optimizer(recipe: Recipe, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """Adam with default settings, or (fast recipe) with warm-up plus cosine decay and
    weight decay. Either way each variable's update runs as one fused kernel."""
    learning_rate = recipe.peak_learning_rate  # the default recipe's: Adam's default 0.001
    if recipe.warmup_cosine:
        warmup = steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.peak_learning_rate / 10,
            decay_steps=max(1, steps_per_epoch * epochs - warmup),
            warmup_target=recipe.peak_learning_rate,
            warmup_steps=warmup,
        )
    return with_fused_adam_kernel(
        keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=recipe.weight_decay)
    )


def with_fused_adam_kernel(optimizer: keras.optimizers.Adam) -> keras.optimizers.Adam:
    """Run each variable's Adam update as TensorFlow's ``ResourceApplyAdam`` kernel.

    The math is Keras' ``Adam.update_step``, the same formula (the step size
    ``lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)``, epsilon added to ``sqrt(v)``), but in
    one kernel per variable instead of about ten small ops, which the profile showed
    mattering at batch 32 (docs/performance.md). It replaces ``update_step`` on this one
    object, not the class, so a saved model's optimizer is a plain ``Adam`` that loads
    anywhere. Keras' own update runs where the kernel does not fit: AMSGrad, sparse
    gradients, and under a distribution strategy (whose variables have one copy per
    device; those paths keep Keras' tested code).
    """
    keras_update_step = optimizer.update_step

    def update_step(gradient, variable, learning_rate):
        if (
            optimizer.amsgrad
            or isinstance(gradient, tf.IndexedSlices)
            or tf.distribute.has_strategy()
        ):
            return keras_update_step(gradient, variable, learning_rate)
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
