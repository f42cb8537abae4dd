"""Preemption and resume, atomic outputs, reproducibility (real training in subprocesses)."""

import json
import os
import platform
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from job import plots
from job.cli import main
from job.cpu import ONEDNN_VARIABLE, X86_64
from job.errors import Interrupted, Preempted
from tests.conftest import REPO, read_scalars

pytestmark = pytest.mark.integration


def job_command(data, run_dir, *extra):
    return [
        sys.executable,
        "-m",
        "job",
        "train",
        "--data",
        str(data),
        "--output-dir",
        str(run_dir),
        "--no-export",
        *map(str, extra),
    ]


# 20k images at one step per call: epochs of a few seconds, long enough to interrupt.
RESUMABLE = ("--limit", 20000, "--epochs", 3, "--steps-per-execution", 1, "--seed", 5)


def start_and_interrupt(command, run_dir, sig):
    """Start a run, wait until its first epoch is backed up, then send ``sig``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while not list((run_dir / "backup").glob("epoch-*.keras")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def finish(command):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, mnist_path):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    finish(job_command(mnist_path, run_dir, *RESUMABLE))
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "Ctrl-C"]
)
def test_interrupted_run_resumes_and_reports_each_epoch_once(
    tmp_path, mnist_path, sig, uninterrupted
):
    run_dir = tmp_path / "run"
    command = job_command(mnist_path, run_dir, *RESUMABLE)
    code, stderr = start_and_interrupt(command, run_dir, sig)
    if sig == signal.SIGTERM:
        assert code == Preempted.exit_code, stderr[-2000:]
        assert "SIGTERM" in stderr and "Traceback" not in stderr
    elif sig == signal.SIGINT:
        assert code == Interrupted.exit_code, stderr[-2000:]
        assert stderr.endswith(
            f"error: {run_dir}: interrupted; run the same command again to resume\n"
        )
    else:
        assert code == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "backup").is_dir()

    finish(command)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in report["training"]["history"]] == [1, 2, 3]
    assert report["training"]["resumed_from_epoch"] >= 1
    assert abs(report["test"]["accuracy"] - uninterrupted["test"]["accuracy"]) < 0.01
    assert not (run_dir / "backup").exists()  # removed once the run was committed
    # TensorBoard continues the same logs: every epoch once, with the report's values.
    logged = read_scalars(run_dir / "tensorboard" / "train")["epoch_loss"]
    history = report["training"]["history"]
    assert logged == [(e["epoch"], pytest.approx(e["loss"])) for e in history]


def test_deterministic_runs_are_bit_identical(tmp_path, mnist_path):
    reports, weights = [], []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        finish(
            job_command(
                mnist_path,
                run_dir,
                "--limit",
                3000,
                "--epochs",
                2,
                "--seed",
                11,
                "--deterministic",
                "--validation-split",
                0.1,
            )
        )
        reports.append(json.loads((run_dir / "metrics.json").read_text()))
        model = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
        weights.append(model.get_weights())
    for first, second in zip(*weights, strict=True):
        np.testing.assert_array_equal(first, second)
    assert reports[0]["test"] == reports[1]["test"]
    # with oneDNN on, the job's default on x86-64 (unless the one running the tests chose)
    if platform.machine().lower() in X86_64 and os.environ[ONEDNN_VARIABLE] == "1":
        assert reports[0]["environment"]["onednn"] is True
    strip = [
        [{k: v for k, v in e.items() if k != "seconds"} for e in r["training"]["history"]]
        for r in reports
    ]
    assert strip[0] == strip[1]


def test_crash_between_writes_leaves_the_old_finished_run(tmp_path, synthetic_npz, monkeypatch):
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(synthetic_npz),
        "--output-dir",
        str(run_dir),
        "--no-export",
        "--epochs",
        "1",
    ]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    calls = []
    real_save = plots.save_figure

    def crash_on_third(fig, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("injected crash")
        return real_save(fig, path)

    monkeypatch.setattr(plots, "save_figure", crash_on_third)
    result = CliRunner().invoke(main, [*args, "--overwrite", "--seed", 99])
    assert result.exit_code != 0 and len(calls) == 3
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    for name in ("metrics.json", "model.keras", "accuracy.png", "loss.png", "predictions.png"):
        assert after[name] == before[name], f"{name} changed by the crashed run"
