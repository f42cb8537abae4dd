"""The optimizer each recipe trains with."""

from __future__ import annotations

import keras

from job.config import Recipe


def make_optimizer(recipe: Recipe, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """Adam with default settings, or (fast recipe) with warm-up plus cosine decay and
    weight decay."""
    if not recipe.warmup_cosine:
        return keras.optimizers.Adam(weight_decay=recipe.weight_decay)
    warmup = steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.peak_learning_rate / 10,
        decay_steps=max(1, steps_per_epoch * epochs - warmup),
        warmup_target=recipe.peak_learning_rate,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(learning_rate=schedule, weight_decay=recipe.weight_decay)
