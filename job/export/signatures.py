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


def _within_batch_limit(batch: tf.Tensor) -> tf.Tensor:
    """``batch`` unchanged, or InvalidArgument when it holds over MAX_BATCH inputs."""
    check = tf.debugging.assert_less_equal(
        tf.shape(batch, out_type=tf.int64)[0],
        tf.constant(c.MAX_BATCH, tf.int64),
        message=f"a request holds at most {c.MAX_BATCH} inputs; split it",
    )
    with tf.control_dependencies([check]):
        return tf.identity(batch)


def _of_image_shape(images: tf.Tensor) -> tf.Tensor:
    """``images`` unchanged, or InvalidArgument unless they are [batch, 28, 28]. A server
    feeds what a request holds, whatever the signature says; with oneDNN on, TensorFlow's
    convolution aborts the whole process on a wrong shape instead of refusing it."""
    return tf.ensure_shape(images, [None, c.IMAGE_SIZE, c.IMAGE_SIZE])


def _unsigned(encoded: tf.Tensor, start: int, size: int, big_endian: bool) -> tf.Tensor:
    """The unsigned integer in bytes ``start``..``start + size`` of ``encoded``."""
    long_enough = tf.debugging.assert_greater_equal(
        tf.strings.length(encoded), start + size, message="image bytes end inside the header"
    )
    with tf.control_dependencies([long_enough]):
        raw = tf.io.decode_raw(tf.strings.substr(encoded, start, size), tf.uint8)
    weights = tf.constant([256**i for i in range(size)], tf.int64)
    if big_endian:
        weights = tf.reverse(weights, [0])
    return tf.reduce_sum(tf.reshape(tf.cast(raw, tf.int64), [size]) * weights)


def _bmp_dimension(encoded: tf.Tensor, start: int) -> tf.Tensor:
    value = _unsigned(encoded, start, 4, big_endian=False)
    signed = tf.where(value >= 2**31, value - 2**32, value)  # top-down BMPs: negative height
    return tf.abs(signed)


def image_header_size(encoded: tf.Tensor) -> tf.Tensor:
    """[height, width] as the header of a PNG, JPEG, GIF or BMP states them, read without
    decoding; [0, 0] for other bytes (which decode_image then refuses)."""
    prefix = tf.strings.substr(encoded, 0, 8)

    def png():
        return tf.stack([_unsigned(encoded, 20, 4, True), _unsigned(encoded, 16, 4, True)])

    def gif():
        return tf.stack([_unsigned(encoded, 8, 2, False), _unsigned(encoded, 6, 2, False)])

    def bmp():
        return tf.stack([_bmp_dimension(encoded, 22), _bmp_dimension(encoded, 18)])

    def jpeg():
        return tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64)

    return tf.case(
        [
            (tf.equal(prefix, b"\x89PNG\r\n\x1a\n"), png),
            (tf.equal(tf.strings.substr(prefix, 0, 3), b"GIF"), gif),
            (tf.equal(tf.strings.substr(prefix, 0, 2), b"BM"), bmp),
            (tf.io.is_jpeg(encoded), jpeg),
        ],
        default=lambda: tf.zeros([2], tf.int64),
        exclusive=False,
    )


def _decode_to_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """PNG/JPEG/GIF/BMP bytes -> [28, 28] float32 grayscale 0..255; other sizes are resized.

    The size in the header is checked first: a few hundred bytes can claim an image that
    needs gigabytes to decode.
    """
    height_width = image_header_size(encoded)
    check = tf.debugging.assert_less_equal(
        height_width[0] * height_width[1],
        tf.constant(c.MAX_IMAGE_PIXELS, tf.int64),
        message=f"image larger than {c.MAX_IMAGE_PIXELS} pixels; MNIST digits are 28x28",
    )
    with tf.control_dependencies([check]):
        # As RGB, then grey: TensorFlow refuses to decode a GIF to one channel.
        image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)
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
        return _classify(model, _within_batch_limit(_of_image_shape(images)))

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.float32, c.INPUT_PIXELS)])
    def serve_pixels_float(images):
        return _classify(model, _within_batch_limit(_of_image_shape(images)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, c.INPUT_IMAGE_BYTES)])
    def serve_image_bytes(image_bytes):
        image_bytes = _within_batch_limit(image_bytes)
        pixels = tf.map_fn(_decode_to_pixels, image_bytes, fn_output_signature=tf.float32)
        return _classify(model, pixels)

    archive.add_endpoint(c.SIGNATURE_PIXELS, serve_pixels)
    archive.add_endpoint(c.SIGNATURE_PIXELS_FLOAT, serve_pixels_float)
    archive.add_endpoint(c.SIGNATURE_IMAGE_BYTES, serve_image_bytes)
    return archive
