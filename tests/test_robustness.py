"""Many runs at once, full disks and hostile requests (real processes where that is the
behaviour: concurrent runs, a small tmpfs for a full disk)."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from job import rundir
from job.errors import OutputError
from job.export import contract as c
from job.export import versions
from job.export.signatures import image_header_size
from serving.cli import main as serving_main
from tests.conftest import REPO

pytestmark = pytest.mark.integration

JOB = [sys.executable, "-m", "job", "train"]


def run_job(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*JOB, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------- run directories


def test_runs_started_together_get_their_own_folders_and_versions(tmp_path, synthetic_npz):
    common = ["--data", str(synthetic_npz), "--epochs", "1", "--runs-dir", str(tmp_path / "runs")]
    # Without the gate: it would hold back a run that scored under an earlier one.
    common += ["--export-dir", str(tmp_path / "models" / "mnist"), "--no-gate"]
    procs = [
        subprocess.Popen(
            [*JOB, *common], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 3 and all((r / "metrics.json").exists() for r in runs)
    assert versions.existing_versions(tmp_path / "models" / "mnist") == [1, 2, 3]
    exports = {json.loads((r / "metrics.json").read_text())["artifacts"]["export"] for r in runs}
    assert len(exports) == 3  # each report names its own version


def test_new_run_names_sort_by_time_and_differ_within_a_second():
    names = {rundir.new_run_name() for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", n) for n in names)


def test_a_live_run_holds_its_folder(tmp_path, synthetic_npz):
    run_dir = tmp_path / "run"
    with rundir.claim(run_dir, overwrite=False, exclusive=False) as held:
        held.mark_started()
        (run_dir / "history.json").write_text("{}")
        second = run_job("--data", str(synthetic_npz), "--output-dir", str(run_dir), "--overwrite")
        assert second.returncode == 2
        (line,) = error_lines(second.stderr)
        assert "in use by a live run" in line and f"pid {os.getpid()}" in line
        assert (run_dir / "history.json").read_text() == "{}"  # the first run is untouched
    # The lock goes with the process that held it: the folder can be used again.
    with rundir.claim(run_dir, overwrite=False, exclusive=False):
        pass


def test_other_workers_of_a_multi_worker_run_hold_locks_of_their_own(tmp_path):
    run_dir = tmp_path / "run"
    with (
        rundir.claim(run_dir, overwrite=False, exclusive=False),
        rundir.claim(run_dir, overwrite=False, exclusive=False, lock_suffix="worker-1"),
    ):
        assert (run_dir / ".lock").exists() and (run_dir / ".lock-worker-1").exists()


def test_multi_worker_runs_must_name_their_folder(tmp_path, synthetic_npz):
    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"index": 0}}
    done = run_job(
        "--data", str(synthetic_npz), "--runs-dir", str(tmp_path / "runs"),
        env={"TF_CONFIG": json.dumps(tf_config)},
    )  # fmt: skip
    assert done.returncode == 2 and "need --output-dir" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_that_never_started_leaves_nothing(tmp_path):
    env = {"KERAS_HOME": str(tmp_path / "keras"), "MNIST_JOB_CACHE_DIR": str(tmp_path / "cache")}
    done = run_job("--offline", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert done.returncode == 3, done.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_existing_version_is_refused_before_training(tmp_path, synthetic_npz):
    (tmp_path / "models" / "3").mkdir(parents=True)
    done = run_job(
        "--data", str(synthetic_npz), "--runs-dir", str(tmp_path / "runs"),
        "--export-dir", str(tmp_path / "models"), "--export-version", "3",
    )  # fmt: skip
    assert done.returncode == 2 and "already exists" in done.stderr
    assert "Epoch" not in done.stdout + done.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_export_that_loses_the_version_race_takes_the_next(tmp_path, monkeypatch):
    base = tmp_path / "models"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_text("the other run's")
    finished = base / ".tmp-next-x"
    finished.mkdir()
    (finished / "saved_model.pb").write_text("ours")
    stale = iter([1, 2])  # our first look at the folder predates the other run's rename
    monkeypatch.setattr(versions, "next_version", lambda export_dir: next(stale))
    final = versions.rename_into_version(finished, base, None)
    assert final == base / "2" and (final / "saved_model.pb").read_text() == "ours"
    assert (base / "1" / "saved_model.pb").read_text() == "the other run's"


# --------------------------------------------------------------------------- full disks


class SmallDisk:
    """A tmpfs mounted for one test."""

    def __init__(self, path: Path):
        self.path = path

    def resize(self, kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB tmpfs: a full disk for a job that writes megabytes."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_during_export_is_one_line_and_the_rerun_does_not_train(
    tmp_path, small_disk, synthetic_npz
):
    args = ["--data", str(synthetic_npz), "--epochs", "2", "--output-dir", str(tmp_path / "run")]
    args += ["--export-dir", str(small_disk.path / "mnist")]
    full = run_job(*args)
    assert full.returncode == OutputError.exit_code, full.stderr[-2000:]
    (line,) = error_lines(full.stderr)
    assert "No space left on device" in line and str(small_disk.path / "mnist") in line
    assert "Traceback" not in full.stderr
    assert list((small_disk.path / "mnist").iterdir()) == []  # no version, no temporary
    assert not (tmp_path / "run" / "metrics.json").exists()

    small_disk.resize(50_000)
    again = run_job(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "going straight to evaluation" in again.stderr
    assert "Epoch 1/2" not in again.stdout + again.stderr
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["training"]["resumed_from_epoch"] == 2
    assert [e["epoch"] for e in report["training"]["history"]] == [1, 2]
    assert versions.existing_versions(small_disk.path / "mnist") == [1]
    assert not (tmp_path / "run" / "backup").exists()  # committed: nothing left to resume


def test_a_full_disk_during_training_is_one_line(small_disk, synthetic_npz):
    run_dir = small_disk.path / "run"
    done = run_job("--data", str(synthetic_npz), "--output-dir", str(run_dir), "--no-export")
    assert done.returncode == OutputError.exit_code, done.stderr[-2000:]
    (line,) = error_lines(done.stderr)
    assert "No space left on device" in line and str(run_dir) in line
    assert "Traceback" not in done.stderr
    assert not (run_dir / "metrics.json").exists()
    assert not [p for p in run_dir.rglob("*.tmp*")]  # no half-written file


# --------------------------------------------------------------------------- hostile requests


def png_claiming(width: int, height: int) -> bytes:
    """A valid, all-black grayscale PNG of the given size, built row by row (small in memory
    and on disk; decoding it would take width * height bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def encoded(fmt: str, width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 200).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_image_size_is_read_from_the_header(fmt):
    size = tf.function(image_header_size)(tf.constant(encoded(fmt, 30, 41)))
    assert size.numpy().tolist() == [41, 30, 1]  # height, width, passes


HUGE_PNG_PROBE = """
import resource, sys, tensorflow as tf
from job.export import contract as c
serve = tf.saved_model.load(sys.argv[1]).signatures[c.SIGNATURE_IMAGE_BYTES]
small = open(sys.argv[3], "rb").read()
serve(**{c.INPUT_IMAGE_BYTES: tf.constant([small])})  # warm: the graph's own memory
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    serve(**{c.INPUT_IMAGE_BYTES: tf.constant([open(sys.argv[2], "rb").read()])})
    print("ANSWERED")
except tf.errors.InvalidArgumentError as exc:
    print("INVALID_ARGUMENT", "larger than" in exc.message)
print("GREW_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_predict_image_refuses_a_huge_image_before_decoding_it(trained_run, tmp_path):
    huge, small = tmp_path / "huge.png", tmp_path / "small.png"
    huge.write_bytes(png_claiming(20000, 20000))
    small.write_bytes(encoded("PNG", 28, 28))
    done = subprocess.run(
        [sys.executable, "-c", HUGE_PNG_PROBE, str(trained_run["version_dir"]), str(huge), small],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "INVALID_ARGUMENT True" in done.stdout, done.stdout + done.stderr[-2000:]
    grew = float(done.stdout.split("GREW_MB")[1])
    assert grew < 200, f"the refused request grew the process by {grew} MB"


@pytest.fixture(scope="module")
def signatures(trained_run):
    return tf.saved_model.load(str(trained_run["version_dir"])).signatures


@pytest.mark.parametrize("name", [c.SIGNATURE_PIXELS, c.SIGNATURE_PIXELS_FLOAT])
def test_every_signature_refuses_a_batch_over_the_limit(signatures, name):
    dtype = tf.uint8 if name == c.SIGNATURE_PIXELS else tf.float32
    over = tf.zeros([c.MAX_BATCH + 1, c.IMAGE_SIZE, c.IMAGE_SIZE], dtype)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1024"):
        signatures[name](**{c.INPUT_PIXELS: over})
    signatures[name](**{c.INPUT_PIXELS: over[: c.MAX_BATCH]})  # the limit itself is fine


def test_image_signature_refuses_too_many_and_undecodable_images(signatures):
    serve = signatures[c.SIGNATURE_IMAGE_BYTES]
    png = encoded("PNG", 28, 28)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1024"):
        serve(**{c.INPUT_IMAGE_BYTES: tf.constant([png] * (c.MAX_BATCH + 1))})
    for bad in (b"not an image at all", png[:30], b"\x89PNG\r\n\x1a\n"):
        with pytest.raises(tf.errors.InvalidArgumentError):
            serve(**{c.INPUT_IMAGE_BYTES: tf.constant([bad])})


@pytest.mark.parametrize("kind", ["bomb", "truncated", "over the limit"])
def test_client_says_one_line_for_a_bad_image_file(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "bomb":
        path.write_bytes(png_claiming(20000, 20000))
    elif kind == "truncated":
        path.write_bytes(encoded("PNG", 28, 28)[:60])
    else:
        path.write_bytes(png_claiming(3000, 3000))
    result = CliRunner().invoke(
        serving_main, ["predict", "--rest", "http://127.0.0.1:9", str(path)]
    )
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0]
