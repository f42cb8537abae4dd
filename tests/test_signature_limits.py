"""The exported model's own input limits, at their edges, and every request the fuzz campaign of
issue #32 found, as regression cases. A request that might decode a bomb goes to the fuzz worker
(a child process under a memory cap and a timeout), never to the test process."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from job.export import contract as c
from job.export.signatures import (
    _check_request,
    _decode_to_pixels,
    _pixel_rule,
    _within_batch_limit,
    _within_request_bytes,
    decode_images,
    image_header_size,
)
from tests.fuzz import images
from tests.fuzz.worker import Worker, make_export
from tests.test_boundaries import png

REFUSED = tf.errors.InvalidArgumentError


def test_a_batch_of_exactly_max_batch_passes_and_one_more_is_refused():
    edge = tf.zeros([c.MAX_BATCH, 2], tf.uint8)
    assert _within_batch_limit(edge).shape == (c.MAX_BATCH, 2)
    with pytest.raises(REFUSED, match="at most 1024 inputs; split it"):
        _within_batch_limit(tf.zeros([c.MAX_BATCH + 1, 2], tf.uint8))


def check(*sizes: list[int]) -> None:
    """_check_request on images of these [height, width, passes]."""
    _check_request(tf.constant([b""] * len(sizes)), tf.constant(sizes, tf.int64))


def test_the_bounds_per_image_and_per_request_at_their_edges():
    assert c.MAX_IMAGE_PIXELS == 1024 * 1024 and c.MAX_REQUEST_PIXELS == 8 * c.MAX_IMAGE_PIXELS
    check([1024, 1024, 1], [28, 28, c.MAX_IMAGE_PASSES])
    check(*[[1024, 1024, 1]] * 8)
    check([1024, 1024, 8])
    with pytest.raises(REFUSED, match="image larger than 1048576 pixels"):
        check([1025, 1024, 1])
    with pytest.raises(REFUSED, match="image larger than 1048576 pixels"):
        check([1, c.MAX_IMAGE_PIXELS + 1, 1])
    with pytest.raises(REFUSED, match="image of more than 16 GIF frames or JPEG scans"):
        check([28, 28, c.MAX_IMAGE_PASSES + 1])
    with pytest.raises(REFUSED, match="request over 8388608 pixels"):
        check(*[[1024, 1024, 1]] * 8, [1, 1, 1])
    with pytest.raises(REFUSED, match="request over 8388608 pixels"):
        check([1024, 1024, 9])


def test_the_bytes_per_request_at_their_edges():
    half = c.MAX_REQUEST_BYTES // 2
    _within_request_bytes(tf.constant([b"x" * half, b"y" * half]))
    with pytest.raises(REFUSED, match="request over 16777216 bytes"):
        _within_request_bytes(tf.constant([b"x" * half, b"y" * (half + 1)]))
    gif = c.IMAGE_MAGIC["GIF"]
    _within_request_bytes(tf.constant([gif * (c.MAX_REQUEST_GIF_BYTES // 4), b"x" * 100]))
    with pytest.raises(REFUSED, match="over 524288 bytes of GIF"):
        _within_request_bytes(tf.constant([gif * (c.MAX_REQUEST_GIF_BYTES // 4), gif]))


def test_an_image_of_exactly_the_pixel_limit_is_decoded():
    decoded = decode_images(tf.constant([png(1024, 1024)]))
    assert decoded.shape == (1, 28, 28) and decoded.dtype == tf.float32
    assert float(tf.reduce_max(decoded)) == 0.0


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
    decoded = _decode_to_pixels(tf.constant(images.animated_gif(3))).numpy()
    assert decoded.shape == (28, 28) and decoded.max() == 0  # frames: black, white, black


def test_a_larger_image_is_smoothed_as_it_shrinks_not_sampled():
    checkerboard = (np.indices((84, 84)).sum(axis=0) % 2 * 255).astype(np.uint8)
    decoded = _decode_to_pixels(tf.constant(images.encode(checkerboard, "PNG"))).numpy()
    assert 90 < decoded.min() <= decoded.max() < 165  # each 3x3 block averaged: 4/9 or 5/9 lit


def test_a_28x28_image_is_decoded_as_it_is():
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    decoded = _decode_to_pixels(tf.constant(images.encode(image, "PNG")))
    np.testing.assert_array_equal(decoded.numpy(), image.astype(np.float32))


def test_a_digit_drawn_on_an_html_canvas_is_read_by_its_alpha():
    seven = images.digit()
    canvas = _decode_to_pixels(tf.constant(images.canvas_png(seven))).numpy()
    np.testing.assert_array_equal(canvas, seven.astype(np.float32))
    # White strokes on a transparent black background read the same.
    rgba = np.stack([seven, seven, seven, seven], axis=-1)
    white = _decode_to_pixels(tf.constant(images.encode(rgba, "PNG"))).numpy()
    np.testing.assert_array_equal(white, seven.astype(np.float32))


def test_an_image_with_no_fully_transparent_pixel_is_read_by_its_grey_level():
    rgba = np.stack([images.digit()] * 3 + [np.full((28, 28), 200, np.uint8)], axis=-1)
    decoded = _decode_to_pixels(tf.constant(images.encode(rgba, "PNG"))).numpy()
    np.testing.assert_array_equal(decoded, images.digit().astype(np.float32))


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
        assert image_header_size(tf.constant(raw)).numpy().tolist() == [height, width, 1]


def test_passes_are_the_frames_of_a_gif_and_the_scans_of_a_jpeg():
    assert image_header_size(tf.constant(images.animated_gif(5))).numpy().tolist() == [28, 28, 5]
    progressive = images.encode(np.stack([images.digit()] * 3, -1), "JPEG", progressive=True)
    scans = progressive.count(b"\xff\xda")
    assert scans > 1
    assert image_header_size(tf.constant(progressive)).numpy().tolist() == [28, 28, scans]


def test_other_bytes_and_a_cut_header_are_refused():
    with pytest.raises(REFUSED, match="not a PNG, JPEG, GIF or BMP image"):
        image_header_size(tf.constant(b"hello, not an image"))
    with pytest.raises(REFUSED, match="image bytes end inside the header"):
        image_header_size(tf.constant(png(28, 28)[:23]))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -1.0, 256.0, 0.5, 1e30])
def test_float_pixels_outside_the_rule_are_refused(value):
    pixels = np.zeros((2, 28, 28), np.float32)
    pixels[1, 3, 4] = value
    with pytest.raises(REFUSED, match="pixels must be whole numbers 0..255"):
        _pixel_rule(tf.constant(pixels))
    assert c.pixel_problem(pixels) == c.PIXEL_RULE  # the clients' and data checks' side


def test_float_pixels_0_and_255_pass():
    pixels = np.zeros((2, 28, 28), np.float32)
    pixels[1] = 255
    np.testing.assert_array_equal(_pixel_rule(tf.constant(pixels)).numpy(), pixels)
    assert c.pixel_problem(pixels) is None


# --------------------------------------------------------------------------- the fuzz findings


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module", params=[True, False], ids=["onednn", "no-onednn"])
def worker(request, small_export):
    worker = Worker(small_export, onednn=request.param, timeout=60)
    worker.start()
    yield worker
    worker.stop()


def still_gif() -> bytes:
    return images.encode(images.digit(), "GIF")


FOUND = {
    "JPEG XL declaring 20000x20000": (images.jpeg_xl_huge, "not a PNG, JPEG, GIF or BMP"),
    "WebP declaring 16384x16384 in 34 bytes": (images.webp_tiny, "not a PNG, JPEG, GIF or BMP"),
    "GIF frame of 65535x65535 in a 28x28 GIF": (images.gif_frame_bomb, "larger than the GIF"),
    "GIF of 17 frames": (lambda: images.animated_gif(17), "more than 16 GIF frames"),
    "JPEG of 500 scans": (images.jpeg_many_scans, "more than 16 GIF frames or JPEG scans"),
    "JPEG declaring 20000x20000": (lambda: images.jpeg_with_size(20000, 20000), "image larger"),
    "PNG declaring 100000x100000": (lambda: png(28, 28)[:16] + b"\0\1\x86\xa0" * 2, "larger"),
    "progressive JPEG cut after its first scan": (
        images.truncated_progressive_jpeg,
        "the JPEG is cut before its end",
    ),
    "GIF cut before its trailer": (lambda: still_gif()[:-1], "the GIF is cut before its end"),
}


@pytest.mark.parametrize("name", FOUND)
def test_what_the_fuzz_campaign_found_is_refused(worker, name):
    make, reason = FOUND[name]
    answer = worker.ask(c.SIGNATURE_IMAGE_BYTES, [make()])
    assert answer.status == "refused", answer
    assert reason in answer.detail


def test_1024_images_over_the_request_bound_are_refused_and_at_it_answered(worker):
    over = worker.ask(c.SIGNATURE_IMAGE_BYTES, [png(128, 65)] * c.MAX_BATCH)
    assert over.status == "refused" and "request over 8388608 pixels" in over.detail
    edge = worker.ask(c.SIGNATURE_IMAGE_BYTES, [png(128, 64)] * c.MAX_BATCH)  # 8388608
    assert edge.status == "ok", edge


def test_a_request_far_over_the_byte_bound_costs_no_more_than_its_own_bytes(worker):
    """make fuzz (2026-12-06): 1024 copies of this 2 MB GIF of 1085 frames, 2 GB, held 2.06 GB
    in the worker: the request's own bytes. 64 copies (128 MB) show the same refusal."""
    found = Path(__file__).parent / "fuzz" / "found" / "gif-1085-frames.gif.gz"
    answer = worker.ask(c.SIGNATURE_IMAGE_BYTES, [gzip.decompress(found.read_bytes())] * 64)
    assert answer.status == "refused" and "request over 16777216 bytes" in answer.detail, answer


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0, 256.0, 0.5])
def test_predict_float_refuses_pixels_outside_the_rule(worker, value):
    pixels = np.full((2, 28, 28), 255, np.float32)
    pixels[0, 3, 4] = value
    answer = worker.ask(c.SIGNATURE_PIXELS_FLOAT, pixels)
    assert answer.status == "refused" and c.PIXEL_RULE in answer.detail


def test_every_seed_image_is_answered(worker):
    answer = worker.ask(c.SIGNATURE_IMAGE_BYTES, list(images.seed_corpus().values()))
    assert answer.status == "ok", answer
