"""The serving graphs around the trained model; scaling and decoding happen here.

The signatures are built by hand with ``keras.export.ExportArchive`` rather than
``model.export``: Keras 3 renames inputs and outputs when it picks them itself
(keras-team/keras#19458: ``inputs``, ``output_0``), and ``model.export`` with several outputs
and an input signature has failed before (keras-team/keras#21258).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from job.export import contract as c


def _classify(model: keras.Model, pixels: tf.Tensor) -> dict[str, tf.Tensor]:
    """Pixels [batch, 28, 28] in 0..255 -> the contract's outputs. Scaling lives here."""
    scaled = tf.cast(pixels, tf.float32) / 255.0
    probabilities = tf.cast(model(scaled[..., tf.newaxis], training=False), tf.float32)
    return {
        c.OUTPUT_PROBABILITIES: probabilities,
        c.OUTPUT_DIGIT: tf.argmax(probabilities, axis=1),
    }


def _decode_to_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """PNG/JPEG/GIF/BMP bytes -> [28, 28] float32 grayscale 0..255; other sizes are resized."""
    image = tf.io.decode_image(encoded, channels=1, dtype=tf.uint8, expand_animations=False)
    image = tf.cast(image, tf.float32)
    size = tf.shape(image)[:2]
    image = tf.cond(
        tf.reduce_all(tf.equal(size, [c.IMAGE_SIZE, c.IMAGE_SIZE])),
        lambda: image,
        lambda: tf.image.resize(image, [c.IMAGE_SIZE, c.IMAGE_SIZE], antialias=True),
    )
    return tf.ensure_shape(image[..., 0], [c.IMAGE_SIZE, c.IMAGE_SIZE])


def build_archive(model: keras.Model) -> keras.export.ExportArchive:
    """The three serving signatures around ``model``."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    size = c.IMAGE_SIZE

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.uint8, c.INPUT_PIXELS)])
    def serve_pixels(images):
        return _classify(model, images)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.float32, c.INPUT_PIXELS)])
    def serve_pixels_float(images):
        return _classify(model, images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, c.INPUT_IMAGE_BYTES)])
    def serve_image_bytes(image_bytes):
        pixels = tf.map_fn(_decode_to_pixels, image_bytes, fn_output_signature=tf.float32)
        return _classify(model, pixels)

    archive.add_endpoint(c.SIGNATURE_PIXELS, serve_pixels)
    archive.add_endpoint(c.SIGNATURE_PIXELS_FLOAT, serve_pixels_float)
    archive.add_endpoint(c.SIGNATURE_IMAGE_BYTES, serve_image_bytes)
    return archive
