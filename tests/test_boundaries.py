"""The edges of every limit a user relies on: the last value accepted and the first refused.

Labels 0..9, pixels 0..255, the client's MAX_IMAGE_PIXELS, the gate's tolerance, version
numbers (the model's own limits: test_signature_limits.py).
A check loosened or tightened by one fails here (``make mutants`` measures how well).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from job import gate
from job.data import arrays
from job.errors import DataError, JobError, NotBlessed
from job.export import contract as c
from job.export import versions
from serving import inputs
from serving.client import ServingError
from tests.conftest import make_arrays
from tests.fuzz import images
from tests.test_data import bad_npz

# --------------------------------------------------------------------------- data: labels, pixels


def verify(**changes) -> arrays.MnistArrays:
    return arrays.verify_arrays({**make_arrays(20, 10), **changes}, "test.npz")


@pytest.mark.parametrize("key", ["y_train", "y_test"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_labels_0_to_9_are_accepted_and_10_is_refused(key, dtype):
    n = 20 if key == "y_train" else 10
    edge = np.arange(n, dtype=dtype) % 10
    edge[-1] = 9
    assert verify(**{key: edge}).__getattribute__(key).tolist() == edge.tolist()
    over = edge.copy()
    over[3] = 10
    with pytest.raises(DataError, match=r"test.npz: .*labels outside 0..9 \(min 0, max 10\)"):
        verify(**{key: over})


def test_a_negative_label_is_refused():
    labels = np.full(20, 5, np.int64)
    labels[0] = -1
    with pytest.raises(DataError, match=r"labels outside 0..9 \(min -1, max 5\)"):
        verify(y_train=labels)


@pytest.mark.parametrize("key", ["x_train", "x_test"])
@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_pixels_0_to_255_are_accepted_and_256_and_minus_1_are_refused(key, dtype):
    images = make_arrays(20, 10)[key].astype(dtype)
    images[0, 0, :2] = (0, 255)
    checked = getattr(verify(**{key: images}), key)
    assert checked.dtype == np.uint8
    np.testing.assert_array_equal(checked, images)
    for bad in (256, -1):
        wrong = images.copy()
        wrong[0, 0, 0] = bad
        with pytest.raises(DataError, match=f"{key}: pixels must be whole numbers 0..255"):
            verify(**{key: wrong})


def test_pixels_that_are_not_whole_numbers_are_refused():
    images = make_arrays(20, 10)["x_train"].astype(np.float64)
    images[0, 0, 0] = 254.5
    with pytest.raises(DataError, match="x_train: pixels must be whole numbers 0..255"):
        verify(x_train=images)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_infinite_and_nan_pixels_are_refused(value):
    images = make_arrays(20, 10)["x_test"].astype(np.float32)
    images[1, 2, 3] = value
    with pytest.raises(DataError, match="x_test: pixels must be whole numbers 0..255 \\(no NaN"):
        verify(x_test=images)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"x_train": np.zeros((0, 28, 28), np.uint8)}, "x_train is empty"),
        ({"x_test": np.zeros((10, 28, 27), np.uint8)}, r"x_test has shape \(10, 28, 27\)"),
        ({"x_test": np.zeros((10, 784), np.uint8)}, r"x_test has shape \(10, 784\)"),
        ({"x_train": np.zeros((20, 28, 28), bool)}, "x_train: dtype bool; pixels must be"),
        ({"y_test": np.zeros((10, 1), np.uint8)}, r"y_test has shape \(10, 1\), expected \(10,\)"),
        ({"y_test": np.zeros(9, np.uint8)}, r"y_test has shape \(9,\), expected \(10,\)"),
        ({"y_train": np.zeros(20, np.float32)}, "y_train has dtype float32"),
    ],
)
def test_arrays_of_the_wrong_shape_or_type_are_refused(changes, problem):
    with pytest.raises(DataError, match=f"^test.npz: {problem}"):
        verify(**changes)


def test_missing_arrays_are_named():
    raw = make_arrays(20, 10)
    del raw["x_train"], raw["y_test"]
    with pytest.raises(DataError, match="test.npz: missing array\\(s\\) x_train, y_test$"):
        arrays.verify_arrays(raw, "test.npz")


def test_uint8_arrays_pass_through_unchanged():
    raw = make_arrays(20, 10)
    checked = arrays.verify_arrays(raw, "test.npz")
    for key in arrays.ARRAY_KEYS:
        assert getattr(checked, key).dtype == np.uint8
        np.testing.assert_array_equal(getattr(checked, key), raw[key])


def test_checksums_and_description():
    checked = arrays.verify_arrays(make_arrays(20, 10), "test.npz")
    assert not arrays.is_canonical(checked)
    digest = arrays.arrays_sha256(checked)
    assert len(digest) == 64 and digest == arrays.arrays_sha256(checked)
    changed = make_arrays(20, 10)
    changed["y_test"][0] = (changed["y_test"][0] + 1) % 10
    assert arrays.arrays_sha256(arrays.verify_arrays(changed, "x")) != digest
    dataset = arrays.Dataset(checked, "file", "test.npz", digest, False)
    assert dataset.describe() == {
        "source": "file",
        "path": "test.npz",
        "sha256": digest,
        "canonical_mnist": False,
        "train_examples": 20,
        "test_examples": 10,
    }


def test_the_data_checksum_is_the_sha256_of_the_array_sha256s_in_order(monkeypatch):
    checked = arrays.verify_arrays(make_arrays(20, 10), "test.npz")
    digests = [hashlib.sha256(getattr(checked, k).tobytes()).hexdigest() for k in arrays.ARRAY_KEYS]
    assert arrays.arrays_sha256(checked) == hashlib.sha256("".join(digests).encode()).hexdigest()
    monkeypatch.setattr(
        arrays, "CANONICAL_ARRAY_SHA256", dict(zip(arrays.ARRAY_KEYS, digests, strict=True))
    )
    assert arrays.is_canonical(checked)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("missing file", "no such file"),
        ("directory", "is a directory, expected an .npz file"),
        ("empty", "is empty"),
        ("not a zip", "is not a valid .npz file (not a zip archive)"),
        ("needs pickle", "holds Python objects that need pickle; refused"),
        ("corrupted", "is not a valid .npz file (BadZipFile: Bad CRC-32 for file 'x_train.npy')"),
    ],
)
def test_read_npz_names_the_file_and_says_exactly_what_is_wrong(tmp_path, kind, problem):
    path, _ = bad_npz(tmp_path, kind)
    with pytest.raises(DataError) as err:
        arrays.read_npz(path)
    assert str(err.value) == f"{path}: {problem}"


def test_an_npz_member_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", b"\x93NUMPY\x01\x00\x04\x00{}  ")  # a header without keys
    with pytest.raises(DataError) as err:
        arrays.read_npz(path)
    assert str(err.value).startswith(f"{path}: is not a valid .npz file (")
    assert "pickle" not in str(err.value)


def test_an_npz_round_trips_and_a_single_npy_is_refused(tmp_path):
    checked = arrays.verify_arrays(make_arrays(20, 10), "test.npz")
    path = tmp_path / "mnist.npz"
    arrays.write_npz_atomic(checked, path)
    again = arrays.read_npz(path)
    assert arrays.arrays_sha256(again) == arrays.arrays_sha256(checked)
    assert arrays.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    npy = tmp_path / "one.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError) as err:
        arrays.read_npz(npy)
    assert str(err.value) == f"{npy}: is a single .npy array, expected an .npz archive"


# --------------------------------------------------------------------------- the quality gate


def record_version(export_dir, version: int, accuracy) -> None:
    extra = export_dir / str(version) / "assets.extra"
    extra.mkdir(parents=True)
    (extra / c.RUN_INFO_FILE).write_text(json.dumps({"test": {"accuracy": accuracy}}))


def test_the_gate_blesses_exactly_the_tolerance_under_the_baseline(tmp_path):
    record_version(tmp_path, 3, 0.75)
    at_edge = gate.decide(0.5, tmp_path, 0, compare=True, tolerance=0.25)
    assert at_edge == {
        "blessed": True,
        "reason": None,
        "min_test_accuracy": 0,
        "baseline": {"version": 3, "test_accuracy": 0.75},
        "tolerance": 0.25,
    }
    under = gate.decide(np.nextafter(0.5, 0), tmp_path, 0, compare=True, tolerance=0.25)
    assert under["blessed"] is False
    assert under["reason"] == (
        "test accuracy 0.5000 is more than 0.25 under version 3's 0.7500 "
        "(pass --no-gate to export it anyway)"
    )


def test_the_default_tolerance_is_inclusive(tmp_path):
    record_version(tmp_path, 1, 0.984)
    edge = 0.984 - gate.DEFAULT_TOLERANCE
    assert gate.decide(edge, tmp_path, 0, compare=True)["blessed"] is True
    assert gate.decide(edge - 1e-9, tmp_path, 0, compare=True)["blessed"] is False


def test_the_floor_is_inclusive_and_both_reasons_are_given(tmp_path):
    record_version(tmp_path, 1, 0.99)
    assert gate.decide(0.9, tmp_path, 0.9, compare=False)["blessed"] is True
    both = gate.decide(0.89, tmp_path, 0.9, compare=True)
    assert both["reason"] == (
        "test accuracy 0.8900 is under --min-test-accuracy 0.9 (pass a lower one, or 0, to "
        "export it anyway); test accuracy 0.8900 is more than 0.005 under version 1's 0.9900 "
        "(pass --no-gate to export it anyway)"
    )


def test_without_comparing_there_is_no_baseline_or_tolerance(tmp_path):
    record_version(tmp_path, 1, 0.99)
    decision = gate.decide(0.5, tmp_path, 0, compare=False)
    assert decision == {
        "blessed": True,
        "reason": None,
        "min_test_accuracy": 0,
        "baseline": None,
        "tolerance": None,
    }


def test_refuse_unblessed_names_the_export_dir_and_the_reason(tmp_path):
    gate.refuse_unblessed({"blessed": True, "reason": None}, tmp_path)
    with pytest.raises(NotBlessed, match=f"^{tmp_path}: not exported: too low$"):
        gate.refuse_unblessed({"blessed": False, "reason": "too low"}, tmp_path)


# --------------------------------------------------------------------------- export versions


def test_versions_are_numbered_folders_only(tmp_path):
    assert versions.existing_versions(tmp_path / "absent") == []
    assert versions.next_version(tmp_path / "absent") == 1
    for name in ("2", "10", "9", "x1", "3a", ".tmp-4"):
        (tmp_path / name).mkdir()
    assert versions.existing_versions(tmp_path) == [2, 9, 10]
    assert versions.next_version(tmp_path) == 11


def test_an_existing_version_is_refused(tmp_path):
    versions.check_version_free(tmp_path, 1)
    (tmp_path / "1").mkdir()
    with pytest.raises(JobError) as err:
        versions.check_version_free(tmp_path, 1)
    assert str(err.value) == f"{tmp_path / '1'}: version 1 already exists; it is never overwritten"


def test_rename_into_version_takes_the_next_free_or_the_one_given(tmp_path):
    def finished(name):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"x")
        return folder

    assert versions.rename_into_version(finished(".a"), tmp_path, None) == tmp_path / "1"
    assert versions.rename_into_version(finished(".b"), tmp_path, 7) == tmp_path / "7"
    assert versions.rename_into_version(finished(".c"), tmp_path, None) == tmp_path / "8"
    with pytest.raises(JobError, match="7: appeared while exporting; not overwritten"):
        versions.rename_into_version(finished(".d"), tmp_path, 7)
    assert (tmp_path / ".d").is_dir()  # the finished export is kept, not lost
    with pytest.raises(FileNotFoundError):
        versions.rename_into_version(tmp_path / ".absent", tmp_path, None)


def test_rename_gives_up_after_so_many_taken_versions(tmp_path, monkeypatch):
    tmp = tmp_path / ".new"
    tmp.mkdir()
    (tmp / "f").write_text("x")
    taken = []

    def always_taken(src, dst):
        taken.append(dst)
        raise OSError(39, "Directory not empty")  # ENOTEMPTY

    monkeypatch.setattr(versions.os, "rename", always_taken)
    with pytest.raises(JobError, match=f"no free version after {versions.RENAME_TRIES} tries"):
        versions.rename_into_version(tmp, tmp_path, None)
    assert len(taken) == versions.RENAME_TRIES


def test_the_newest_version_with_a_record_is_the_baseline(tmp_path):
    assert versions.newest_recorded_accuracy(tmp_path) is None
    record_version(tmp_path, 1, 0.9)
    record_version(tmp_path, 2, 0.95)
    (tmp_path / "3" / "assets.extra").mkdir(parents=True)  # no record
    (tmp_path / "3" / "assets.extra" / c.RUN_INFO_FILE).write_text("{not json")
    record_version(tmp_path, 4, None)  # a record without a number
    (tmp_path / "5" / "assets.extra").mkdir(parents=True)
    (tmp_path / "5" / "assets.extra" / c.RUN_INFO_FILE).write_text('{"test": {}}')
    (tmp_path / "6").mkdir()
    assert versions.newest_recorded_accuracy(tmp_path) == (2, 0.95)


# --------------------------------------------------------------------------- client inputs


def test_client_pixels_255_are_accepted_and_256_and_minus_1_refused():
    pixels = np.zeros((28, 28), np.int64)
    pixels[0, 0] = 255
    checked = inputs.check_pixels(pixels, "x.npy")
    assert checked.shape == (1, 28, 28) and checked.dtype == np.uint8 and checked[0, 0, 0] == 255
    for bad in (256, -1):
        pixels[0, 0] = bad
        with pytest.raises(ServingError, match="x.npy: pixels must be whole numbers 0..255"):
            inputs.check_pixels(pixels, "x.npy")


def test_client_float_pixels_follow_the_one_pixel_rule_never_rounded():
    pixels = np.full((2, 28, 28), 255.0, np.float32)
    assert inputs.check_pixels(pixels, "x").tolist() == np.full((2, 28, 28), 255).tolist()
    for bad in (254.6, np.inf, np.nan):
        pixels[1, 5, 5] = bad
        with pytest.raises(ServingError, match="x: pixels must be whole numbers 0..255"):
            inputs.check_pixels(pixels, "x")


@pytest.mark.parametrize(
    ("pixels", "problem"),
    [
        (np.zeros((28,)), r"x: shape \(28,\), expected"),
        (np.zeros((1, 28, 27)), r"x: shape \(1, 28, 27\), expected"),
        (np.zeros((28, 28), bool), "x: dtype bool; pixels must be whole numbers 0..255"),
        (np.full((28, 28), "a"), "x: dtype <U1"),
    ],
)
def test_client_pixels_of_the_wrong_shape_or_type_are_refused(pixels, problem):
    with pytest.raises(ServingError, match=problem):
        inputs.check_pixels(pixels, "x")


def test_an_empty_batch_of_pixels_passes_the_range_check():
    assert inputs.check_pixels(np.zeros((0, 28, 28)), "x").shape == (0, 28, 28)


def test_read_npy_takes_one_array_only(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.full((3, 28, 28), 7, np.uint8))
    assert inputs.read_npy(good).shape == (3, 28, 28)
    archive = tmp_path / "two.npy"
    with open(archive, "wb") as f:
        np.savez(f, a=np.zeros(1))
    with pytest.raises(ServingError, match="an .npz archive; expected one .npy array"):
        inputs.read_npy(archive)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 28)))
    with pytest.raises(ServingError, match=f"^{wrong}: shape \\(3, 28\\)"):
        inputs.read_npy(wrong)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy")
    with pytest.raises(ServingError, match="garbage.npy: not a readable .npy array"):
        inputs.read_npy(garbage)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 0).save(out, "PNG")
    return out.getvalue()


def test_client_image_of_exactly_the_pixel_limit_is_sent_and_one_more_refused(tmp_path):
    assert c.MAX_IMAGE_PIXELS == 1024 * 1024
    edge, over = tmp_path / "edge.png", tmp_path / "over.png"
    edge.write_bytes(png(1024, 1024))
    over.write_bytes(png(1025, 1024))
    assert inputs.read_image_bytes(edge) == edge.read_bytes()
    with pytest.raises(ServingError, match=f"1025x1024 pixels; the limit is {c.MAX_IMAGE_PIXELS}$"):
        inputs.read_image_bytes(over)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_client_sends_every_format_the_model_decodes(tmp_path, fmt):
    path = tmp_path / f"digit.{fmt.lower()}"
    Image.new("L", (28, 28), 0).save(path, fmt)
    assert inputs.read_image_bytes(path) == path.read_bytes()


def test_client_refuses_formats_the_model_cannot_decode(tmp_path):
    tiff = tmp_path / "digit.tiff"
    Image.new("L", (28, 28), 0).save(tiff, "TIFF")
    with pytest.raises(ServingError, match="not a readable PNG, JPEG, GIF or BMP image \\(it beg"):
        inputs.read_image_bytes(tiff)
    text = tmp_path / "digit.png"
    text.write_text("not an image")
    one_line = f"^{text}: not a readable PNG, JPEG, GIF or BMP image \\(it begins b'not an i'\\)$"
    with pytest.raises(ServingError, match=one_line):
        inputs.read_image_bytes(text)


def test_client_names_an_unreadable_or_corrupt_image_in_one_line(tmp_path):
    unreadable = f"^{re.escape(str(tmp_path))}: cannot read the image \\(Is a directory\\)$"
    with pytest.raises(ServingError, match=unreadable):
        inputs.read_image_bytes(tmp_path)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(c.IMAGE_MAGIC["PNG"] + b"not the rest of a PNG")
    with pytest.raises(ServingError, match="corrupt.png: not a readable PNG image \\(."):
        inputs.read_image_bytes(corrupt)


def test_client_refuses_a_cut_jpeg_or_gif_as_the_model_does(tmp_path):
    jpeg, gif = tmp_path / "cut.jpg", tmp_path / "cut.gif"
    jpeg.write_bytes(images.truncated_progressive_jpeg())
    gif.write_bytes(images.encode(images.digit(), "GIF")[:-1])
    with pytest.raises(ServingError, match="cut.jpg: the JPEG is cut before its end$"):
        inputs.read_image_bytes(jpeg)
    with pytest.raises(ServingError, match="cut.gif: the GIF is cut before its end$"):
        inputs.read_image_bytes(gif)


def test_client_reads_a_canvas_digit_by_its_alpha_as_the_model_does(tmp_path):
    path = tmp_path / "canvas.png"
    path.write_bytes(images.canvas_png(images.digit()))
    np.testing.assert_array_equal(inputs.image_to_pixels(path, invert=False), images.digit())
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.stack([images.digit()] * 3 + [np.full((28, 28), 9, np.uint8)], -1)).save(
        opaque
    )
    np.testing.assert_array_equal(inputs.image_to_pixels(opaque, invert=False), images.digit())


@pytest.mark.parametrize("invert", [False, True])
def test_image_to_pixels_resizes_and_inverts(tmp_path, invert):
    path = tmp_path / "big.png"
    Image.new("RGB", (56, 84), (200, 200, 200)).save(path)
    pixels = inputs.image_to_pixels(path, invert=invert)
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert (pixels == (55 if invert else 200)).all()


def test_image_to_pixels_says_one_line_for_data_that_does_not_decode(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
    path = tmp_path / "broken.png"  # whole chunks that pass verify(); the pixels are not zlib
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")
    )
    with pytest.raises(ServingError, match=f"^{path}: cannot decode the image \\(broken data"):
        inputs.image_to_pixels(path, invert=False)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0:16", slice(0, 16)), ("7", slice(7, 8)), ("0", slice(0, 1)), ("3:4", slice(3, 4))],
)
def test_index_ranges(spec, expected):
    assert inputs.parse_index_range(spec) == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("a", "expected START:STOP or INDEX"),
        ("1:2:3", "expected START:STOP or INDEX"),
        ("-1", "expected 0 <= START < STOP"),
        ("-1:3", "expected 0 <= START < STOP"),
        ("5:5", "expected 0 <= START < STOP"),
        ("5:4", "expected 0 <= START < STOP"),
    ],
)
def test_bad_index_ranges_are_one_line(spec, problem):
    with pytest.raises(ServingError, match=f"--mnist-test '{spec}': {problem}"):
        inputs.parse_index_range(spec)
