"""The tf.data input pipeline: validation split, per-epoch shuffle, random shifts."""

import math
import os

import numpy as np
import tensorflow as tf


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
    """Batches of (images, labels), prefetched; reshuffled (and shifted) each epoch if seeded."""
    if translate_pixels and shuffle_seed is None:
        raise ValueError("random shifts need a shuffle seed (they are drawn from it)")
    images_t, labels_t = tf.constant(images), tf.constant(labels.astype(np.int64))
    if shuffle_seed is None:
        ds = tf.data.Dataset.from_tensor_slices((images_t, labels_t)).batch(batch_size)
    else:
        ds = shuffled_batches(images_t, labels_t, batch_size, shuffle_seed, translate_pixels)
    options = tf.data.Options()
    # Each worker keeps every Nth batch: there are no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # No AUTOTUNE: deleting its iterator waits for the tuning thread (docs/performance.md).
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(4)


def shuffled_batches(
    images: tf.Tensor, labels: tf.Tensor, batch_size: int, seed: int, translate_pixels: int
) -> tf.data.Dataset:
    """One shuffle op per epoch, from a seed drawn each pass, each batch gathered from that
    order: a full ``shuffle`` buffer's order without streaming examples one at a time."""
    count = int(images.shape[0])

    def one_epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)])
        )

        def batch_at(start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            idx = order[start : start + batch_size]
            batch = tf.gather(images, idx)
            if translate_pixels:  # a seed of its own per batch: [epoch seed, 1 + start]
                batch = random_shifts(batch, translate_pixels, tf.stack([epoch_seed, start + 1]))
            return batch, tf.gather(labels, idx)

        return tf.data.Dataset.range(0, count, batch_size).map(
            batch_at, num_parallel_calls=os.cpu_count() if translate_pixels else None
        )

    # Dataset.random re-randomizes on every iteration: one new seed per epoch.
    epoch_seed = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = epoch_seed.take(1).flat_map(one_epoch)
    # flat_map hides the length, which the loop and Keras size epochs by.
    return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size)))


def random_shifts(images: tf.Tensor, pixels: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image by up to ``pixels`` whole pixels each way, zero-filled, seeded: masked
    slices of the padded batch, cheaper on CPU than Keras' bilinear ``RandomTranslation``."""
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


def batches(ds: tf.data.Dataset) -> int:
    """How many batches one pass over ``ds`` (made by ``make_dataset``) holds."""
    count = int(ds.cardinality())
    if count < 0:
        raise ValueError("the dataset's length is unknown; build it with make_dataset")
    return count
