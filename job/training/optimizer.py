"""The optimizer each recipe trains with: Keras' Adam."""

from __future__ import annotations

import keras

from job.config import Recipe


def make_optimizer(recipe: Recipe, steps_per_epoch: int, epochs: int) -> keras.optimizers.Adam:
    """Adam with default settings, or (fast recipe) with warm-up plus cosine decay and
    weight decay."""
    learning_rate = recipe.peak_learning_rate  # the default recipe's: Adam's default 0.001
    if recipe.warmup_cosine:
        warmup = steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.peak_learning_rate / 10,
            decay_steps=max(1, steps_per_epoch * epochs - warmup),
            warmup_target=recipe.peak_learning_rate,
            warmup_steps=warmup,
        )
    return keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=recipe.weight_decay)
