"""Images for the fuzz tier and the regression tests: a seed corpus of valid PNG, JPEG, GIF and
BMP files made with Pillow, and the hostile inputs the fuzz campaign of issue #32 found, crafted
here (small files that claim huge sizes; none is ever decoded unbounded)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def digit(size: int = 28) -> np.ndarray:
    """A light '7' on black, ``size`` pixels square: a stroke across the top and down."""
    image = np.zeros((28, 28), np.uint8)
    image[5:8, 6:22] = 255
    for row in range(8, 24):
        image[row, 20 - (row - 8) // 2 : 23 - (row - 8) // 2] = 255
    return np.asarray(Image.fromarray(image).resize((size, size))) if size != 28 else image


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def canvas_png(pixels: np.ndarray) -> bytes:
    """What an HTML canvas exports: black strokes whose ink is only in alpha, on a fully
    transparent background."""
    rgba = np.zeros((*pixels.shape, 4), np.uint8)
    rgba[..., 3] = pixels
    return encode(rgba, "PNG")


def animated_gif(frames: int, size: tuple[int, int] = (28, 28)) -> bytes:
    images = [Image.new("L", size, 255 * (i % 2)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=10)
    return out.getvalue()


def seed_corpus() -> dict[str, bytes]:
    """Valid images of every accepted format and the variants their decoders take apart."""
    seven, noise = digit(), np.random.default_rng(0).integers(0, 256, (40, 30), np.uint8)
    rgb = np.stack([seven, 255 - seven, seven // 2], axis=-1)
    return {
        "grey.png": encode(seven, "PNG"),
        "rgb.png": encode(rgb, "PNG"),
        "interlaced.png": _interlaced(noise),
        "canvas.png": canvas_png(seven),
        "grey.jpg": encode(seven, "JPEG"),
        "rgb-progressive.jpg": encode(rgb, "JPEG", progressive=True),
        "noise.jpg": encode(noise, "JPEG", quality=95),
        "still.gif": encode(seven, "GIF"),
        "animated.gif": animated_gif(3),
        "rgb.bmp": encode(rgb, "BMP"),
        "grey.bmp": encode(seven, "BMP"),
    }


def _interlaced(pixels: np.ndarray) -> bytes:
    """An Adam7-interlaced greyscale PNG (Pillow cannot write one)."""
    height, width = pixels.shape
    passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2))
    passes += ((0, 1, 2, 2), (1, 0, 2, 1))
    raw = b"".join(
        b"".join(b"\0" + pixels[row, x0::dx].tobytes() for row in range(y0, height, dy))
        for y0, x0, dy, dx in passes
        if y0 < height and x0 < width
    )
    return png_file(width, height, zlib.compress(raw), interlace=1)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, idat: bytes, interlace: int = 0) -> bytes:
    """A greyscale 8-bit PNG with the given IHDR size and compressed data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_xl_huge(width: int = 20000, height: int = 20000, size: int = 84_000) -> bytes:
    """A JPEG XL codestream whose SizeHeader declares ``width`` x ``height`` (the 84 KB file
    that aborted TF 2.21's decode_image), padded to ``size`` bytes."""
    bits = [0]  # div8 = 0
    for value in (height, width):  # U32 selector 2: Bits(18) + 1
        bits += [0, 1] + [(value - 1) >> i & 1 for i in range(18)]
        if value == height:
            bits += [0, 0, 0]  # ratio 0: the width follows
    body = bytes(sum(b << i for i, b in enumerate(bits[k : k + 8])) for k in range(0, len(bits), 8))
    return (b"\xff\x0a" + body).ljust(size, b"\x00")


def webp_tiny(width: int = 16384, height: int = 16384) -> bytes:
    """A 34-byte lossless WebP declaring ``width`` x ``height``."""
    header = 0x2F.to_bytes(1, "little") + ((width - 1) | (height - 1) << 14).to_bytes(4, "little")
    payload = header + b"\x00" * 9
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def gif_frame_bomb(side: int = 65535) -> bytes:
    """A 28x28 GIF whose one frame's descriptor claims ``side`` x ``side``: giflib allocates
    the frame at that size and decodes until the data runs out."""
    raw = bytearray(encode(digit(), "GIF"))
    frame = raw.index(b"\x00\x2c") + 1  # the descriptor after the last colour-table entry
    raw[frame + 5 : frame + 9] = struct.pack("<HH", side, side)
    return bytes(raw)


def jpeg_many_scans(scans: int = 500) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans: each scan
    is a pass over every block, so a small file can cost minutes."""
    raw = encode(np.stack([digit()] * 3, axis=-1), "JPEG", progressive=True)
    last = raw.rindex(b"\xff\xda")
    extra = raw[last:-2]
    have = raw.count(b"\xff\xda")
    return raw[:-2] + extra * max(0, scans - have) + b"\xff\xd9"


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small JPEG whose frame header states ``width`` x ``height``."""
    raw = bytearray(encode(digit(), "JPEG"))
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def truncated_progressive_jpeg() -> bytes:
    """A progressive JPEG cut after its first scans: libjpeg answers it as if whole."""
    raw = encode(np.stack([digit()] * 3, axis=-1), "JPEG", progressive=True)
    return raw[: raw.index(b"\xff\xda", raw.index(b"\xff\xda") + 2)]
