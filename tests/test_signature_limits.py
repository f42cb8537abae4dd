"""The exported model's own input limits, at their edges: MAX_BATCH inputs and one more, an
image of exactly MAX_IMAGE_PIXELS pixels and one more, sizes read from image headers."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from job.export import contract as c
from job.export.signatures import _decode_to_pixels, _within_batch_limit, image_header_size
from tests.test_boundaries import png


def test_a_batch_of_exactly_max_batch_passes_and_one_more_is_refused():
    edge = tf.zeros([c.MAX_BATCH, 2], tf.uint8)
    assert _within_batch_limit(edge).shape == (c.MAX_BATCH, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1024 inputs; split it"):
        _within_batch_limit(tf.zeros([c.MAX_BATCH + 1, 2], tf.uint8))


def test_an_image_of_exactly_the_pixel_limit_is_decoded_and_one_more_refused():
    decoded = _decode_to_pixels(tf.constant(png(2000, 2000)))
    assert decoded.shape == (28, 28) and decoded.dtype == tf.float32
    assert float(tf.reduce_max(decoded)) == 0.0
    for width, height in [(c.MAX_IMAGE_PIXELS + 1, 1), (41, 97561)]:  # 4000001 pixels each
        with pytest.raises(tf.errors.InvalidArgumentError, match="image larger than 4000000"):
            _decode_to_pixels(tf.constant(png(width, height)))


def test_the_decoded_shape_is_known_when_the_graph_is_built():
    traced = tf.function(_decode_to_pixels).get_concrete_function(tf.TensorSpec([], tf.string))
    assert traced.structured_outputs.shape.as_list() == [28, 28]


def test_colour_images_are_decoded_as_grey():
    out = io.BytesIO()
    Image.new("RGB", (28, 28), (10, 200, 30)).save(out, "PNG")
    grey = Image.new("RGB", (28, 28), (10, 200, 30)).convert("L").getpixel((0, 0))
    decoded = _decode_to_pixels(tf.constant(out.getvalue())).numpy()
    assert abs(decoded - grey).max() <= 1


def test_an_animated_gif_is_decoded_as_its_first_frame():
    out = io.BytesIO()
    frames = [Image.new("L", (28, 28), 255), Image.new("L", (28, 28), 0)]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    decoded = _decode_to_pixels(tf.constant(out.getvalue())).numpy()
    assert decoded.shape == (28, 28) and decoded.min() == 255


def test_a_larger_image_is_smoothed_as_it_shrinks_not_sampled():
    checkerboard = (np.indices((84, 84)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(checkerboard).save(out, "PNG")
    decoded = _decode_to_pixels(tf.constant(out.getvalue())).numpy()
    assert 90 < decoded.min() <= decoded.max() < 165  # each 3x3 block averaged: 4/9 or 5/9 lit


def test_a_28x28_image_is_decoded_as_it_is():
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    decoded = _decode_to_pixels(tf.constant(out.getvalue()))
    np.testing.assert_array_equal(decoded.numpy(), image.astype(np.float32))


def bmp_top_down(width: int, height: int) -> bytes:
    """A BMP whose header states a negative height: rows stored top to bottom."""
    out = io.BytesIO()
    Image.new("L", (width, height), 0).save(out, "BMP")
    raw = bytearray(out.getvalue())
    raw[22:26] = struct.pack("<i", -height)
    return bytes(raw)


@pytest.mark.parametrize(("width", "height"), [(30, 41), (300, 2), (1, 60000)])
def test_header_sizes_of_every_format(width, height):
    def encoded(fmt):
        out = io.BytesIO()
        Image.new("L", (width, height), 0).save(out, fmt)
        return out.getvalue()

    for raw in (
        png(width, height),
        encoded("GIF"),
        encoded("BMP"),
        bmp_top_down(width, height),
        encoded("JPEG"),
    ):
        assert image_header_size(tf.constant(raw)).numpy().tolist() == [height, width]


def test_header_sizes_of_other_bytes_are_zero_and_a_cut_header_is_refused():
    assert image_header_size(tf.constant(b"hello, not an image")).numpy().tolist() == [0, 0]
    cut = "^image bytes end inside the header\n"
    with pytest.raises(tf.errors.InvalidArgumentError, match=cut):
        image_header_size(tf.constant(png(28, 28)[:23]))
