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


def pod_specs() -> dict[str, dict]:
    """Every pod spec in deploy/: the serving Deployment's and the TFJob's."""
    specs = {}
    for name in ("serving.yaml", "tfjob.yaml"):
        for doc in documents(name):
            if doc["kind"] == "Deployment":
                specs[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
            if doc["kind"] == "TFJob":
                for role, replica in doc["spec"]["tfReplicaSpecs"].items():
                    specs[f"tfjob-{role}"] = replica["template"]["spec"]
    return specs


@pytest.mark.parametrize("name", ["mnist-serving", "tfjob-Chief", "tfjob-Worker"])
def test_pods_meet_the_restricted_pod_security_standard(name):
    pod = pod_specs()[name]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    writable = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), kind
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/tmp") in writable  # TensorFlow's scratch space


def test_everything_is_namespaced_and_the_namespace_enforces_restricted():
    docs = documents("serving.yaml") + documents("tfjob.yaml")
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["kind"]


def test_serving_network_policy_admits_only_the_serving_ports():
    docs = {d["kind"]: d for d in documents("serving.yaml")}
    policy = docs["NetworkPolicy"]["spec"]
    assert (
        policy["podSelector"]["matchLabels"]
        == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {c.GRPC_PORT, c.REST_PORT}
    assert policy["egress"] == []


def test_the_serving_pods_poll_a_rollout_config_with_a_stable_label():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    docs = {d["kind"]: d for d in documents("serving.yaml")}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--model_config_file=/rollout/mnist.config"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/rollout"] == "rollout"
    text = docs["ConfigMap"]["data"]["mnist.config"]
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.base_path == "/models/mnist" and dict(model.version_labels) == {"stable": 1}
