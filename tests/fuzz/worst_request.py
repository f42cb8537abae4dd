"""The cost of the worst requests predict_image accepts: each at a bound of the contract, sent
twice to a fresh child process that loaded the export (the fuzz worker), its time and its peak
resident memory over the loaded model's (ru_maxrss). Prints a Markdown table.

    python -m tests.fuzz.worst_request [--export models/mnist/3] [--onednn 1]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from job.export import contract as c
from tests.fuzz.images import animated_gif, digit, encode
from tests.fuzz.worker import Worker, make_export

SIDE = 1024  # MAX_IMAGE_PIXELS = SIDE x SIDE
assert SIDE * SIDE == c.MAX_IMAGE_PIXELS


def noise(height: int, width: int, seed: int = 0, levels: int = 256) -> np.ndarray:
    """Random pixels; fewer ``levels`` compress better (to fit the bytes per request)."""
    grey = np.random.default_rng(seed).integers(0, levels, (height, width), np.uint8)
    return grey * np.uint8(256 // levels)


def progressive_jpeg(height: int, width: int, scans: int) -> bytes:
    """A colour progressive JPEG of noise with ``scans`` scans (Pillow writes 10; more are
    copies of its last refinement scan, which libjpeg decodes as further passes)."""
    rgb = np.stack([noise(height, width, i) for i in range(3)], -1)
    raw = encode(rgb, "JPEG", progressive=True)
    last = raw.rindex(b"\xff\xda")
    return raw[:-2] + raw[last:-2] * (scans - raw.count(b"\xff\xda")) + b"\xff\xd9"


def candidates() -> dict[str, list[bytes]]:
    per_request = c.MAX_REQUEST_PIXELS // c.MAX_IMAGE_PIXELS  # images of the largest size
    small = int((c.MAX_REQUEST_PIXELS // c.MAX_BATCH) ** 0.5)  # 128: 1024 of them fill it
    gif_side = 1
    while len(encode(noise(gif_side + 8, gif_side + 8), "GIF")) <= c.MAX_REQUEST_GIF_BYTES:
        gif_side += 8
    passes = math.isqrt(c.MAX_REQUEST_PIXELS // c.MAX_IMAGE_PASSES)  # the most passes fill it
    gif = encode(noise(gif_side, gif_side), "GIF")
    small_png = encode(noise(small, small, 0, 16), "PNG")
    mixed = (c.MAX_REQUEST_PIXELS - gif_side**2) // small**2  # fill the request's pixels
    return {
        f"{c.MAX_BATCH} PNG 28x28": [encode(noise(28, 28, i), "PNG") for i in range(c.MAX_BATCH)],
        f"{c.MAX_BATCH} GIF 28x28": [encode(digit(), "GIF")] * c.MAX_BATCH,
        f"{c.MAX_BATCH} JPEG 28x28": [encode(noise(28, 28, i), "JPEG") for i in range(c.MAX_BATCH)],
        f"{c.MAX_BATCH} BMP 28x28": [encode(noise(28, 28, i), "BMP") for i in range(c.MAX_BATCH)],
        f"{c.MAX_BATCH} PNG {small}x{small}": [
            encode(noise(small, small, i, 16), "PNG") for i in range(c.MAX_BATCH)
        ],
        f"{per_request} PNG {SIDE}x{SIDE}": [
            encode(noise(SIDE, SIDE, i, 16), "PNG") for i in range(per_request)
        ],
        f"{per_request} JPEG {SIDE}x{SIDE}": [
            encode(noise(SIDE, SIDE, i, 4), "JPEG") for i in range(per_request)
        ],
        f"1 JPEG {passes}x{passes}, {c.MAX_IMAGE_PASSES} scans": [
            progressive_jpeg(passes, passes, c.MAX_IMAGE_PASSES)
        ],
        f"1 GIF {passes}x{passes}, {c.MAX_IMAGE_PASSES} frames": [
            animated_gif(c.MAX_IMAGE_PASSES, (passes, passes))
        ],
        f"1 GIF {gif_side}x{gif_side} of noise": [gif],
        f"{mixed} PNG {small}x{small} and that GIF": [*[small_png] * mixed, gif],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path)
    parser.add_argument("--onednn", choices=["1", "0"], default="1")
    args = parser.parse_args()
    print("| request | bytes | answer | wall s (first, again) | CPU s | peak RSS over the model |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = args.export or make_export(Path(tmp))
        for name, images in candidates().items():
            worker = Worker(export_dir, onednn=args.onednn == "1", timeout=120)
            first = worker.ask(c.SIGNATURE_IMAGE_BYTES, images)
            again = worker.ask(c.SIGNATURE_IMAGE_BYTES, images)
            worker.stop()
            answer = first.status if first.status != "refused" else first.detail[:60]
            print(
                f"| {name} | {sum(map(len, images)):,} | {answer} | {first.seconds:.2f}, "
                f"{again.seconds:.2f} | {first.cpu_seconds:.2f}, {again.cpu_seconds:.2f} | "
                f"{max(first.rss_growth, again.rss_growth) / 1e6:.0f} MB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
