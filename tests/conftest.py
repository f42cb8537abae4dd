"""Shared fixtures: synthetic MNIST-shaped data, the real MNIST, and one trained run."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from job.cpu import enable_onednn_by_default

REPO = Path(__file__).resolve().parents[1]
# The cache make fills and the CLIs read by default.
DEFAULT_CACHE = Path.home() / ".cache" / "mnist-job"
DATA_DIR = Path(os.environ.setdefault("MNIST_JOB_CACHE_DIR", str(DEFAULT_CACHE)))
# Tests that train in this process run TensorFlow's kernels as the job's CLI picks them.
enable_onednn_by_default()


def load_schema() -> dict:
    """The report's JSON schema, which the tests apply to every report they make."""
    return json.loads((REPO / "job" / "schemas" / "metrics.schema.json").read_text())


def make_arrays(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Separable fake digits: class k lights up a 7x7 block at a position of its own."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            row, col = divmod(int(k), 5)
            images[i, 3 + 12 * row : 10 + 12 * row, 1 + 5 * col : 8 + 5 * col] = 230
        return images, labels

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.fixture
def synthetic_npz(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.npz"
    np.savez(path, **make_arrays())
    return path


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    path = DATA_DIR / "mnist.npz"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make data` (make test does it first)")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_path):
    from job.data import read_npz

    return read_npz(mnist_path)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_path) -> dict:
    """One short real training run (12k images, 1 epoch) through the CLI, with its export."""
    from click.testing import CliRunner

    from job.cli import main

    base = tmp_path_factory.mktemp("trained")
    run_dir, export_dir = base / "run", base / "models" / "mnist"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(mnist_path),
            "--limit",
            "12000",
            "--epochs",
            "1",
            "--output-dir",
            str(run_dir),
            "--export-dir",
            str(export_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    return {"run_dir": run_dir, "export_dir": export_dir, "version_dir": export_dir / "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``log_dir`` (not its subfolders): tag -> [(step,
    value)] in the order written."""
    import tensorflow as tf

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tf.make_ndarray(value.tensor))
                    scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def summary_tags(log_dir: Path) -> set[str]:
    """Every tag in the event files of ``log_dir``, whatever its plugin."""
    import tensorflow as tf

    return {
        value.tag
        for events in log_dir.glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(events))
        for value in event.summary.value
    }


def predict_with_export(version_dir: Path, images: np.ndarray, batch_size: int = 1024):
    """Reload an export with ``tf.saved_model.load`` and run serving_default on uint8 pixels.
    Returns (probabilities [N, 10], digits [N]) as numpy arrays."""
    import tensorflow as tf

    from job.export import contract as c

    serve = tf.saved_model.load(str(version_dir)).signatures[c.SIGNATURE_PIXELS]
    probs, digits = [], []
    for start in range(0, len(images), batch_size):
        out = serve(**{c.INPUT_PIXELS: tf.constant(images[start : start + batch_size])})
        probs.append(out[c.OUTPUT_PROBABILITIES].numpy())
        digits.append(out[c.OUTPUT_DIGIT].numpy())
    return np.concatenate(probs), np.concatenate(digits)
