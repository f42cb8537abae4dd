"""The cluster tier: deploy/slurm.sbatch on a real Slurm cluster (make test-slurm).

Needs a cluster that answers ``sinfo`` and runs jobs from this checkout (a shared file
system, or one node). On one node each job runs two tasks there; on two or more, one task
on each of two nodes. Where the nodes are network namespaces of this machine named
``slurmhere-node1`` and ``slurmhere-node2`` (a cluster of test hosts on one machine), the
tier also trains across them with TF_CONFIG and without Slurm, and cuts one off mid-run.
Not part of ``make test``: the ``slurm`` marker is deselected there.
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
JOB_TIMEOUT = 600


def sinfo(*fields: str) -> list[str]:
    done = subprocess.run(["sinfo", "-h", "-N", *fields], capture_output=True, text=True)
    return done.stdout.split()


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not shutil.which("sinfo") or subprocess.run(["sinfo", "-h"], capture_output=True).returncode:
        pytest.fail("no Slurm cluster answers sinfo: run make test-slurm where one does")


NODES = 2 if shutil.which("sinfo") and len(set(sinfo("-o", "%N"))) >= 2 else 1
# The README's CPU line with the site's partition left out: two tasks on one node, or one
# task on each of two nodes.
SBATCH = ["sbatch", "--parsable", f"--nodes={NODES}", f"--ntasks-per-node={3 - NODES}"]
SBATCH += ["--cpus-per-task=1"]


def hosts(report: dict) -> set[str]:
    """The hosts the report's tasks ran on."""
    return {address.split(":")[0] for address in report["distribution"]["tasks"].values()}


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
    assert sorted(result["distribution"]["tasks"]) == ["worker-0", "worker-1"]
    assert len(hosts(result)) == NODES  # one task on each node


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
    cpus = sum(int(c) for c in sinfo("-o", "%c"))
    if cpus < 4:
        pytest.skip(f"the cluster has {cpus} CPUs; two 2-task jobs side by side need 4")
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
    # Slurm places array tasks where it likes (all on one node, or spread): what the job
    # promises on any shape is one run per task, in a folder of its seed, on one host.
    runs = sorted(sweep.iterdir())
    assert [r.name for r in runs] == ["seed-1", "seed-2", "seed-3"]
    reports = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert [r["config"]["train"]["seed"] for r in reports] == [1, 2, 3]
    assert all(r["distribution"]["workers"] == 1 and len(hosts(r)) == 1 for r in reports)


# ------------------------------------------------- test hosts of one machine, without Slurm

NAMESPACES = [Path(f"/run/netns/slurmhere-node{i}") for i in (1, 2)]
ADDRESSES = ["10.77.0.11", "10.77.0.12"]


@pytest.fixture
def two_hosts():
    if not all(ns.exists() for ns in NAMESPACES):
        pytest.skip("no test hosts slurmhere-node1 and -node2 (SLURM_HERE_NODES=2 slurm-here.sh)")


def start_on_hosts(run_dir: Path, port: int, *args: str) -> list[subprocess.Popen]:
    """One worker in each host's network namespace, the cluster named by TF_CONFIG, as a
    Kubernetes TFJob starts one worker per pod."""
    cluster = {"worker": [f"{address}:{port}" for address in ADDRESSES]}
    procs = []
    for index, namespace in enumerate(NAMESPACES):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(task), "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = ["nsenter", f"--net={namespace}", str(REPO / ".venv/bin/python"), "-m", "job"]
        command += ["train", "--data", str(DATA_DIR / "mnist.npz"), "--output-dir", str(run_dir)]
        procs.append(
            subprocess.Popen(
                [*command, *TRAIN, *args],
                cwd=REPO,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = JOB_TIMEOUT) -> list[str]:
    try:
        return [proc.communicate(timeout=timeout)[1] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()


def test_tf_config_across_two_hosts_gives_the_same_report(tmp_path, two_hosts):
    procs = start_on_hosts(tmp_path / "run", 23456, "--epochs", "1")
    for proc, stderr in zip(procs, finish(procs), strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert result["distribution"]["workers"] == 2
    assert hosts(result) == set(ADDRESSES)


def test_a_host_cut_off_mid_run_ends_the_other_with_75_and_the_rerun_resumes(tmp_path, two_hosts):
    run_dir = tmp_path / "run"
    args = ("--epochs", "6", "--steps-per-execution", "1")
    procs = start_on_hosts(run_dir, 23470, *args)
    wait_until(lambda: list((run_dir / "backup").glob("epoch-*.keras")), 300, "a backup")
    subprocess.run(["ip", "-n", "slurmhere-node2", "link", "set", "eth0", "down"], check=True)
    try:
        cut = time.monotonic()
        stderr = procs[0].communicate(timeout=300)[1]
        assert time.monotonic() - cut < 240, "the surviving worker took too long to stop"
    finally:
        subprocess.run(["ip", "-n", "slurmhere-node2", "link", "set", "eth0", "up"], check=True)
    finish(procs, timeout=300)
    assert procs[0].returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: worker 1 \({ADDRESSES[1]}:\d+\) stopped answering: .*", last)
    assert list((run_dir / "backup").glob("epoch-*.keras"))  # the backup is kept

    procs = start_on_hosts(run_dir, 23490, *args)
    for proc, stderr in zip(procs, finish(procs), strict=True):
        assert proc.returncode == 0, stderr[-3000:]
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["training"]["resumed_from_epoch"] >= 1
    assert [e["epoch"] for e in result["training"]["history"]] == [1, 2, 3, 4, 5, 6]
