"""Loss and accuracy as plain sums, for the loops that do not use Keras' metric objects."""

from __future__ import annotations

import keras
import tensorflow as tf


def loss_and_correct(labels, probabilities, weights=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Summed cross-entropy (the compiled loss) and count of correct answers over a batch's
    examples, each weighted by ``weights`` when given."""
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
