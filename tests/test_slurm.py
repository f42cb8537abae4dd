"""The cluster tier: deploy/slurm.sbatch on a real Slurm cluster (make test-slurm).

Needs a cluster that answers ``sinfo`` and runs jobs from this checkout (a shared file
system, or one node). Not part of ``make test``: the ``slurm`` marker is deselected there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, REPO

pytestmark = pytest.mark.slurm

TRAIN = ["--device", "cpu", "--limit", "4000", "--no-export"]
# Two CPU tasks on one node, as the README's CPU line with the site's partition left out.
SBATCH = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"]
JOB_TIMEOUT = 600


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not shutil.which("sinfo") or subprocess.run(["sinfo", "-h"], capture_output=True).returncode:
        pytest.fail("no Slurm cluster answers sinfo: run make test-slurm where one does")


def submit(runs: Path, *train_args: str, wait: bool) -> str:
    env = {**os.environ, "MNIST_RUNS_DIR": str(runs), "MNIST_JOB_CACHE_DIR": str(DATA_DIR)}
    cmd = [*SBATCH, *(["--wait"] if wait else []), f"--output={runs}/slurm-%j.log"]
    done = subprocess.run(
        [*cmd, "deploy/slurm.sbatch", *TRAIN, *train_args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT,
    )
    job_id = done.stdout.strip().split(";")[0]
    assert wait or done.returncode == 0, done.stderr
    if wait:
        log = runs / f"slurm-{job_id}.log"
        assert done.returncode == 0, log.read_text()[-3000:] if log.exists() else done.stderr
    return job_id


def job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    match = re.search(r"JobState=(\w+)", out)
    return match.group(1) if match else "GONE"


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1)


def report(runs: Path, job_id: str) -> dict:
    return json.loads((runs / f"slurm-{job_id}" / "metrics.json").read_text())


def test_two_cpu_tasks_train_into_one_report(tmp_path):
    job_id = submit(tmp_path, "--epochs", "1", wait=True)
    result = report(tmp_path, job_id)
    assert result["distribution"]["workers"] == 2
    assert result["distribution"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert result["environment"]["device"]["used"] == "cpu"


def test_a_requeued_job_resumes_and_reports_each_epoch_once(tmp_path):
    job_id = submit(tmp_path, "--epochs", "4", "--steps-per-execution", "1", wait=False)
    history = tmp_path / f"slurm-{job_id}" / "history.json"
    wait_until(lambda: history.exists() and json.loads(history.read_text()), 300, "epoch 1")
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    wait_until(lambda: job_state(job_id) in ("COMPLETED", "FAILED", "GONE"), JOB_TIMEOUT, "end")
    assert job_state(job_id) in ("COMPLETED", "GONE")
    result = report(tmp_path, job_id)
    assert result["training"]["resumed_from_epoch"] >= 1
    assert [e["epoch"] for e in result["training"]["history"]] == [1, 2, 3, 4]


def test_two_jobs_side_by_side_both_finish(tmp_path):
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout)
    if cpus < 4:
        pytest.skip(f"the node has {cpus} CPUs; two 2-task jobs side by side need 4")
    ids = [submit(tmp_path, "--epochs", "2", wait=False) for _ in range(2)]
    overlapped = False

    def both_done() -> bool:
        nonlocal overlapped
        states = [job_state(i) for i in ids]
        overlapped |= states == ["RUNNING", "RUNNING"]
        return all(s in ("COMPLETED", "FAILED", "GONE") for s in states)

    wait_until(both_done, JOB_TIMEOUT, "both jobs")
    assert overlapped, "the two jobs never ran at the same time"
    for job_id in ids:
        assert report(tmp_path, job_id)["distribution"]["workers"] == 2, job_id


def test_a_sweep_array_reads_as_one_row(tmp_path):
    env = {**os.environ, "MNIST_RUNS_DIR": str(tmp_path), "MNIST_JOB_CACHE_DIR": str(DATA_DIR)}
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--array=1-3", "--cpus-per-task=1",
         f"--output={tmp_path}/sweep-%A-%a.log", "deploy/slurm-sweep.sbatch",
         "--limit", "2000", "--epochs", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (sweep,) = tmp_path.glob("sweep-*/")
    table = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-m", "job", "report", *map(str, sweep.iterdir()),
         "--group-by", "recipe,epochs", "--format", "json"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    (row,) = json.loads(table.stdout)
    assert row["runs"] == 3 and row["test_acc_min"] <= row["test_acc_mean"] <= row["test_acc_max"]
