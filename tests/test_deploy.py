"""The cluster manifests: Kubernetes schemas where a package ships them, structure otherwise."""

import re

import kubernetes_validate
import pytest
import yaml

from job.export import contract as c
from tests.conftest import REPO

K8S_VERSION = "1.30.0"


def documents(name):
    return [d for d in yaml.safe_load_all((REPO / "deploy" / name).read_text()) if d]


@pytest.mark.parametrize("name", ["tfjob.yaml", "serving.yaml"])
def test_core_resources_match_the_kubernetes_schemas(name):
    for doc in documents(name):
        if doc["kind"] == "TFJob":
            continue  # a Kubeflow CRD: no schema ships with kubernetes-validate
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_tfjob_structure():
    (tfjob,) = [d for d in documents("tfjob.yaml") if d["kind"] == "TFJob"]
    assert tfjob["apiVersion"] == "kubeflow.org/v1"
    specs = tfjob["spec"]["tfReplicaSpecs"]
    assert specs["Chief"]["replicas"] == 1 and specs["Worker"]["replicas"] >= 1
    for role in ("Chief", "Worker"):
        pod = specs[role]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "tensorflow"  # the name the training operator expects
        assert container["args"][0] == "train" and "multi-worker" in container["args"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/app/runs", "/app/models", "/data"} <= mounts
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The pod spec must itself be a valid Kubernetes PodSpec.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
            K8S_VERSION,
            strict=True,
        )


def test_serving_ports_match_the_contract():
    docs = {d["kind"]: d for d in documents("serving.yaml")}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {c.GRPC_PORT, c.REST_PORT}
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {c.GRPC_PORT, c.REST_PORT}
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{c.MODEL_NAME}"


def test_slurm_script():
    text = (REPO / "deploy" / "slurm.sbatch").read_text()
    assert text.startswith("#!/bin/bash")
    assert re.search(r"^#SBATCH --nodes=\d+", text, re.M)
    assert re.search(r"^srun .*-m job train --distribute auto", text, re.M)
    assert "--requeue" in text
