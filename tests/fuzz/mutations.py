"""Hypothesis strategies for the fuzz tier: requests for each signature, the images among them
mutated where decoders read sizes and lengths (header dimensions, GIF frame descriptors, PNG
chunk lengths, JPEG markers and scans), cut short, or given another format's magic bytes."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from hypothesis import strategies as st

from job.export import contract as c
from tests.fuzz.images import seed_corpus

SEEDS = seed_corpus()
# Sizes that sit on the edges of the bounds and of the fields' integer types.
EDGES = [0, 1, 27, 28, 29, 1023, 1024, 1025, 4096, 32767, 32768, 65535, 65536, 2**31 - 1, 2**32 - 1]
MAGIC = [
    b"\xff\x0a",  # JPEG XL codestream
    b"\x00\x00\x00\x0cJXL \r\n\x87\n",  # JPEG XL container
    b"RIFF\x22\x00\x00\x00WEBPVP8L",  # WebP
    b"II*\x00",  # TIFF
    b"\x00\x00\x00\x1cftypavif",  # AVIF
    b"GIF87a",
    b"BM",
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
]


def _put(raw: bytearray, at: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if at >= 0 and at + size <= len(raw):
        raw[at : at + size] = struct.pack(fmt, value % (1 << (8 * size)))


def _png_chunks(raw: bytes) -> list[int]:
    """Offsets of the PNG chunks' length fields."""
    offsets, at = [], 8
    while at + 8 <= len(raw) and len(offsets) < 64:
        offsets.append(at)
        at += 12 + struct.unpack(">I", raw[at : at + 4])[0]
    return offsets


def _fix_png_crcs(raw: bytearray) -> None:
    """Recompute each chunk's CRC, so a mutation gets past the CRC check to the decoder."""
    for at in _png_chunks(bytes(raw)):
        length = struct.unpack(">I", raw[at : at + 4])[0]
        end = at + 8 + length
        if end + 4 <= len(raw):
            raw[end : end + 4] = struct.pack(">I", zlib.crc32(raw[at + 4 : end]))


@st.composite
def dimensions(draw, raw: bytearray) -> bytearray:
    """A size field of the image's format set to an edge or any value."""
    value = draw(st.sampled_from(EDGES) | st.integers(0, 2**32 - 1))
    if raw.startswith(c.IMAGE_MAGIC["PNG"]):
        _put(raw, draw(st.sampled_from([16, 20])), ">I", value)
        _fix_png_crcs(raw)
    elif raw.startswith(c.IMAGE_MAGIC["GIF"]):
        frames = [i + 1 for i in range(len(raw) - 1) if raw[i : i + 2] == b"\x00\x2c"]
        spots = [6, 8] + [f + offset for f in frames for offset in (1, 3, 5, 7)]
        _put(raw, draw(st.sampled_from(spots)), "<H", value)
    elif raw.startswith(c.IMAGE_MAGIC["BMP"]):
        _put(raw, draw(st.sampled_from([18, 22, 2, 10, 14, 28, 30, 34])), "<I", value)
    else:
        frames = [i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] in (0xC0, 0xC2)]
        if frames:
            _put(raw, draw(st.sampled_from(frames)) + draw(st.sampled_from([5, 7])), ">H", value)
    return raw


@st.composite
def structure(draw, raw: bytearray) -> bytearray:
    """A length, frame or marker changed: PNG chunk lengths, GIF frames repeated, JPEG scans
    repeated or markers swapped."""
    if raw.startswith(c.IMAGE_MAGIC["PNG"]) and _png_chunks(bytes(raw)):
        chunks = _png_chunks(bytes(raw))
        value = draw(st.sampled_from(EDGES) | st.integers(0, 2**32 - 1))
        _put(raw, draw(st.sampled_from(chunks)), ">I", value)
        if draw(st.booleans()):
            _fix_png_crcs(raw)
    elif raw.startswith(c.IMAGE_MAGIC["GIF"]):
        frame = bytes(raw).find(b"\x00\x2c") + 1
        if frame > 0:
            body = raw[frame:-1]
            raw[frame:-1] = body * draw(st.integers(1, 40))
            raw[frame + 9 : frame + 10] = bytes([draw(st.integers(0, 255))])
    elif raw.startswith(c.IMAGE_MAGIC["JPEG"]):
        markers = [i for i in range(len(raw) - 1) if raw[i] == 0xFF and 0xC0 <= raw[i + 1] <= 0xFE]
        if draw(st.booleans()) and b"\xff\xda" in raw:
            last = bytes(raw).rindex(b"\xff\xda")
            raw[last:-2] = raw[last:-2] * draw(st.integers(1, 40))
        elif markers:
            raw[draw(st.sampled_from(markers)) + 1] = draw(st.integers(0xC0, 0xFE))
    return raw


@st.composite
def image_bytes(draw) -> bytes:
    """A seed image with up to three mutations."""
    raw = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["size", "structure", "cut", "bytes", "magic", "splice"]))
        if kind == "size":
            raw = draw(dimensions(raw))
        elif kind == "structure":
            raw = draw(structure(raw))
        elif kind == "cut":
            raw = raw[: draw(st.integers(0, len(raw)))]
        elif kind == "bytes" and raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw[at : at + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
        elif kind == "magic":
            magic = draw(st.sampled_from(MAGIC))
            raw[: draw(st.integers(0, len(magic)))] = magic
        elif kind == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            raw = raw[: draw(st.integers(0, len(raw)))] + other[draw(st.integers(0, len(other))) :]
    return bytes(raw)


SPECIAL = [np.nan, np.inf, -np.inf, -1.0, 256.0, 0.5, 254.999, 1e30, -0.0, 0.0, 255.0]


@st.composite
def float_pixels(draw) -> np.ndarray:
    batch = draw(st.integers(0, 4))
    pixels = np.full((batch, 28, 28), draw(st.sampled_from([0.0, 255.0, 7.0])), np.float32)
    for _ in range(draw(st.integers(0, 3))):
        if batch:
            spot = [draw(st.integers(0, batch - 1)), draw(st.integers(0, 27)), 0]
            spot[2] = draw(st.integers(0, 27))
            pixels[tuple(spot)] = draw(st.sampled_from(SPECIAL) | st.floats(width=32))
    return pixels


def requests():
    """(signature, value) pairs; most are image requests, where the decoders are."""
    images = st.lists(image_bytes(), min_size=0, max_size=4) | st.tuples(
        image_bytes(), st.sampled_from([64, c.MAX_BATCH, c.MAX_BATCH + 1])
    ).map(lambda many: [many[0]] * many[1])
    uint8 = st.integers(0, 3).map(lambda n: np.full((n, 28, 28), 255, np.uint8))
    return st.one_of(
        images.map(lambda value: (c.SIGNATURE_IMAGE_BYTES, value)),
        images.map(lambda value: (c.SIGNATURE_IMAGE_BYTES, value)),
        images.map(lambda value: (c.SIGNATURE_IMAGE_BYTES, value)),
        float_pixels().map(lambda value: (c.SIGNATURE_PIXELS_FLOAT, value)),
        uint8.map(lambda value: (c.SIGNATURE_PIXELS, value)),
    )
