"""What a client sends (pixel arrays, image files, MNIST test indices), checked first: every
problem is a one-line ServingError. Pillow loads only where an image file is read."""

import io
import struct
from pathlib import Path

import numpy as np

from job.export import contract as c
from serving import ServingError


def check_pixels(pixels: np.ndarray, source: object) -> np.ndarray:
    """[28, 28] or [N, 28, 28] pixels in 0..255 -> uint8 [N, 28, 28]."""
    pixels = np.asarray(pixels)
    if pixels.shape == (c.IMAGE_SIZE, c.IMAGE_SIZE):
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or pixels.shape[1:] != (c.IMAGE_SIZE, c.IMAGE_SIZE):
        raise ServingError(f"{source}: shape {pixels.shape}, expected (28, 28) or (N, 28, 28)")
    problem = c.pixel_problem(pixels)
    if problem:
        raise ServingError(f"{source}: {problem}")
    return pixels.astype(np.uint8)


def read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ServingError(f"{path}: not a readable .npy array ({exc})") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        raise ServingError(f"{path}: an .npz archive; expected one .npy array")
    return check_pixels(array, path)


def _image_problems():
    """What Pillow raises for a file it cannot read: bad, truncated or oversized images."""
    from PIL import Image

    return (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def read_image_bytes(path: Path) -> bytes:
    """The file's bytes after the graph's own checks: a whole PNG, JPEG, GIF or BMP (told by its
    first bytes) whose header is within the pixel limit (a small file can claim a huge image)."""
    from PIL import Image

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ServingError(f"{path}: cannot read the image ({exc.strerror})") from None
    kind = next((kind for kind, magic in c.IMAGE_MAGIC.items() if raw.startswith(magic)), None)
    if kind is None:
        raise ServingError(
            f"{path}: not a readable PNG, JPEG, GIF or BMP image (it begins {raw[:8]!r})"
        )
    if not raw.endswith(c.IMAGE_END.get(kind, b"")):
        raise ServingError(f"{path}: the {kind} is cut before its end")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > c.MAX_IMAGE_PIXELS:
                raise ServingError(
                    f"{path}: {width}x{height} pixels; the limit is {c.MAX_IMAGE_PIXELS}"
                )
            image.verify()
    except _image_problems() as exc:
        raise ServingError(f"{path}: not a readable {kind} image ({exc})") from None
    return raw


def image_to_pixels(path: Path, invert: bool) -> np.ndarray:
    """Decode on the client (for --invert) as the graph does: grey (a PNG with a transparent
    pixel: its alpha, the contract's rule), resized to 28x28, optionally inverted."""
    from PIL import Image

    raw = read_image_bytes(path)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            alpha = image.convert("RGBA").getchannel("A") if image.format == "PNG" else None
            transparent = alpha is not None and alpha.getextrema()[0] == 0
            grey = alpha if transparent else image.convert("L")
            small = grey.resize((c.IMAGE_SIZE, c.IMAGE_SIZE), Image.Resampling.LANCZOS)
            pixels = np.asarray(small, dtype=np.uint8)
    except _image_problems() as exc:
        raise ServingError(f"{path}: cannot decode the image ({exc})") from None
    return 255 - pixels if invert else pixels


def parse_index_range(spec: str) -> slice:
    """'0:16' -> slice(0, 16); '7' -> slice(7, 8)."""
    start, colon, stop = spec.partition(":")
    try:
        start = int(start)
        stop = int(stop) if colon else start + 1
    except ValueError:
        raise ServingError(f"--mnist-test {spec!r}: expected START:STOP or INDEX") from None
    if start < 0 or stop <= start:
        raise ServingError(f"--mnist-test {spec!r}: expected 0 <= START < STOP")
    return slice(start, stop)
