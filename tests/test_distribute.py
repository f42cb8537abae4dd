"""Two real worker processes on 127.0.0.1 with TF_CONFIG: MultiWorkerMirroredStrategy."""

import json
import os
import subprocess
import sys

import pytest

from job.distribute import resolve_mode
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def test_two_workers_train_one_report_one_export(tmp_path, mnist_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dir, export_dir = tmp_path / "run", tmp_path / "models" / "mnist"
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        command = [
            sys.executable,
            "-m",
            "job",
            "train",
            "--data",
            str(mnist_path),
            "--limit",
            "8000",
            "--epochs",
            "1",
            "--distribute",
            "auto",
            "--output-dir",
            str(run_dir),
            "--export-dir",
            str(export_dir),
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
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
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
