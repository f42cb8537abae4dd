"""Two real worker processes on 127.0.0.1 with TF_CONFIG: MultiWorkerMirroredStrategy."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from job.training.strategies import resolve_mode
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def start_workers(mnist_path, run_dir, export_dir, ports, *extra):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(len(ports)):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": json.dumps(task)}
        command = [
            sys.executable,
            "-m",
            "job",
            "train",
            "--data",
            str(mnist_path),
            "--distribute",
            "auto",
            "--output-dir",
            str(run_dir),
            "--export-dir",
            str(export_dir),
            *map(str, extra),
        ]
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def wait_all(procs, timeout=300):
    try:
        return [proc.communicate(timeout=timeout)[1] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()


def test_two_workers_train_one_report_one_export(tmp_path, mnist_path):
    run_dir, export_dir = tmp_path / "run", tmp_path / "models" / "mnist"
    ports = [free_port(), free_port()]
    procs = start_workers(mnist_path, run_dir, export_dir, ports, "--limit", 8000, "--epochs", 1)
    for proc, stderr in zip(procs, wait_all(procs), strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    assert sorted(p.name for p in export_dir.iterdir()) == ["1"]
    assert list(tmp_path.rglob("metrics.json")) == [run_dir / "metrics.json"]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["distribution"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert report["distribution"]["workers"] == 2 and report["distribution"]["replicas"] == 2
    assert report["distribution"]["global_batch_size"] == 64
    assert [e["epoch"] for e in report["training"]["history"]] == [1]
    assert report["test"]["accuracy"] > 0.85
    assert not [p for p in run_dir.iterdir() if p.name.startswith((".worker", "backup"))]


def test_two_workers_resume_after_being_killed(tmp_path, mnist_path):
    run_dir, export_dir = tmp_path / "run", tmp_path / "models" / "mnist"
    args = ("--limit", 30000, "--epochs", 3, "--no-export")
    procs = start_workers(mnist_path, run_dir, export_dir, [free_port(), free_port()], *args)
    deadline = time.monotonic() + 240
    while not (run_dir / "backup" / "checkpoint").exists():
        assert all(p.poll() is None for p in procs), wait_all(procs)
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "finished before it could be killed"
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    wait_all(procs)
    assert not (run_dir / "metrics.json").exists()

    procs = start_workers(mnist_path, run_dir, export_dir, [free_port(), free_port()], *args)
    for proc, stderr in zip(procs, wait_all(procs), strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in report["training"]["history"]] == [1, 2, 3]
    assert report["training"]["resumed_from_epoch"] >= 1
    assert report["test"]["accuracy"] > 0.9


@pytest.mark.parametrize(
    "env, mode",
    [
        ({}, "none"),
        (
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
                )
            },
            "multi-worker",
        ),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, "multi-worker"),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, "none"),
    ],
)
def test_auto_picks_from_the_environment(monkeypatch, env, mode):
    for key in ("TF_CONFIG", "SLURM_JOB_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_mode("auto") == mode
