"""The REST and gRPC clients end to end against the TF Serving stand-in (tests only)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import requests
import tensorflow as tf
from click.testing import CliRunner

from job.export import contract as c
from serving import client, inputs
from serving.cli import main
from tests.conftest import REPO, free_port, predict_with_export
from tests.tf_serving_standin import (
    StandIn,
    batching_parameters_type,
    max_input_batch_size,
    parse_text_proto,
    single_model_config,
)

pytestmark = pytest.mark.integration


# A real TensorFlow Serving to test against instead of the stand-in, e.g. in the workflow.
REAL_REST, REAL_GRPC = os.environ.get("MNIST_SERVING_REST"), os.environ.get("MNIST_SERVING_GRPC")
needs_this_runs_model = pytest.mark.skipif(
    bool(REAL_REST and REAL_GRPC),
    reason="MNIST_SERVING_REST/GRPC: the real server serves its own model, not this run's",
)


@dataclass(frozen=True)
class RealServer:
    rest_url: str
    grpc_target: str


def project_batching():
    """serving/batching.config, parsed as the server parses it."""
    return parse_text_proto(str(REPO / "serving/batching.config"), batching_parameters_type()())


@pytest.fixture(scope="module")
def server(trained_run):
    """The stand-in serving the trained run's export with the project's batching on (as
    make serve BATCHING=1), or the real server named by MNIST_SERVING_REST and
    MNIST_SERVING_GRPC."""
    if REAL_REST and REAL_GRPC:
        yield RealServer(REAL_REST.rstrip("/"), REAL_GRPC)
        return
    config = single_model_config(c.MODEL_NAME, trained_run["export_dir"])
    with StandIn(config, batching=project_batching()) as standin:
        yield standin


@needs_this_runs_model
def test_rest_grpc_and_in_process_agree_exactly(server, trained_run, mnist):
    pixels = mnist.x_test[:64]
    rest = client.predict_rest(server.rest_url, pixels=pixels)
    grpc_out = client.predict_grpc(server.grpc_target, pixels=pixels)
    local_probs, local_digits = predict_with_export(trained_run["version_dir"], pixels)
    np.testing.assert_array_equal(rest[c.OUTPUT_DIGIT], local_digits)
    np.testing.assert_array_equal(grpc_out[c.OUTPUT_DIGIT], local_digits)
    np.testing.assert_array_equal(grpc_out[c.OUTPUT_PROBABILITIES], local_probs)
    np.testing.assert_allclose(rest[c.OUTPUT_PROBABILITIES], local_probs, rtol=1e-6)
    assert np.mean(local_digits == mnist.y_test[:64]) > 0.85


def test_png_bytes_and_pixels_give_the_same_digit(server, mnist):
    pngs = [tf.io.encode_png(p[..., None]).numpy() for p in mnist.x_test[:16]]
    for call, target in (
        (client.predict_rest, server.rest_url),
        (client.predict_grpc, server.grpc_target),
    ):
        by_png = call(target, image_bytes=pngs)
        by_pixels = call(target, pixels=mnist.x_test[:16])
        np.testing.assert_array_equal(by_png[c.OUTPUT_DIGIT], by_pixels[c.OUTPUT_DIGIT])


def test_status_and_metadata(server):
    for status in (
        client.Server(server.rest_url, True).status(c.MODEL_NAME),
        client.Server(server.grpc_target, False).status(c.MODEL_NAME),
    ):
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
    for meta in (
        client.Server(server.rest_url, True).metadata(c.MODEL_NAME),
        client.Server(server.grpc_target, False).metadata(c.MODEL_NAME),
    ):
        signatures = meta["metadata"]["signature_def"]["signature_def"]
        default = signatures[c.SIGNATURE_PIXELS]
        assert set(default["outputs"]) == {c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT}
        assert set(default["inputs"]) == {c.INPUT_PIXELS}
        assert set(signatures[c.SIGNATURE_IMAGE_BYTES]["inputs"]) == {c.INPUT_IMAGE_BYTES}


def test_rest_columnar_format(server, mnist):
    body = {"signature_name": c.SIGNATURE_PIXELS, "inputs": mnist.x_test[:3].tolist()}
    reply = requests.post(f"{server.rest_url}/v1/models/mnist:predict", json=body, timeout=10)
    assert reply.status_code == 200
    assert len(reply.json()["outputs"][c.OUTPUT_DIGIT]) == 3


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (json.dumps({"instances": [[1, 2, 3]]}).encode(), 400),
        (json.dumps({"nothing": 1}).encode(), 400),
        (json.dumps({"signature_name": "nope", "instances": [[[0] * 28] * 28]}).encode(), 400),
    ],
)
def test_standin_answers_bad_requests_with_tf_serving_errors(server, body, status):
    reply = requests.post(f"{server.rest_url}/v1/models/mnist:predict", data=body, timeout=10)
    assert reply.status_code == status
    assert set(reply.json()) == {"error"}
    assert client.Server(server.rest_url, True).status(c.MODEL_NAME)  # still serving


def test_unknown_model_and_version(server, mnist):
    for call, target in (
        (client.predict_rest, server.rest_url),
        (client.predict_grpc, server.grpc_target),
    ):
        with pytest.raises(client.ServingError, match="not found|NOT_FOUND"):
            call(target, "nosuchmodel", pixels=mnist.x_test[:1])
        with pytest.raises(client.ServingError, match="not found|NOT_FOUND"):
            call(target, pixels=mnist.x_test[:1], version=99)


def test_server_down_is_one_clear_error(mnist):
    port = free_port()
    with pytest.raises(client.ServingError, match="cannot connect"):
        client.predict_rest(f"http://127.0.0.1:{port}", pixels=mnist.x_test[:1], timeout=2)
    with pytest.raises(client.ServingError, match="cannot connect|no answer"):
        client.predict_grpc(f"127.0.0.1:{port}", pixels=mnist.x_test[:1], timeout=2)


def test_bad_client_inputs(tmp_path):
    with pytest.raises(client.ServingError, match="expected \\(28, 28\\)"):
        inputs.check_pixels(np.zeros((2, 27, 28)), "x.npy")
    with pytest.raises(client.ServingError, match="NaN"):
        inputs.check_pixels(np.full((28, 28), np.nan), "x.npy")
    with pytest.raises(client.ServingError, match="limit is 1024"):
        client.check_batch(c.MAX_BATCH + 1)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(client.ServingError, match="not a readable PNG"):
        inputs.read_image_bytes(text)


def test_cli_classifies_digit_pngs_over_rest_and_grpc(server, mnist, tmp_path):
    files = []
    for i in range(8):
        path = tmp_path / f"digit{i}.png"
        path.write_bytes(tf.io.encode_png(mnist.x_test[i][..., None]).numpy())
        files.append(str(path))
    np.save(tmp_path / "batch.npy", mnist.x_test[8:12])
    for flag, target in (("--rest", server.rest_url), ("--grpc", server.grpc_target)):
        result = CliRunner().invoke(
            main, ["predict", flag, target, "--format", "json", *files, str(tmp_path / "batch.npy")]
        )
        assert result.exit_code == 0, result.output
        assert result.stderr == f"{target}: mnist version 1 answered\n"
        rows = json.loads(result.stdout)
        assert len(rows) == 12
        digits = [r["digit"] for r in rows]
        assert np.mean(np.array(digits) == mnist.y_test[:12]) >= 0.8


def test_cli_errors_are_one_line(tmp_path):
    port = free_port()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5)))
    cases = [
        (["predict", "--rest", f"http://127.0.0.1:{port}", str(bad)], "expected (28, 28)"),
        (
            ["predict", "--rest", f"http://127.0.0.1:{port}", "--mnist-test", "0:1"],
            "cannot connect",
        ),
        (
            ["predict", "--grpc", f"127.0.0.1:{port}", "--timeout", "1", "--mnist-test", "0:1"],
            "127.0.0.1",
        ),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    usage = CliRunner().invoke(main, ["predict", "--mnist-test", "0:1"])
    assert usage.exit_code == 2 and "--rest" in usage.output


def test_a_server_that_never_answers_times_out(mnist):
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(client.ServingError, match="no answer within 1 s"):
            client.predict_rest(f"http://127.0.0.1:{port}", pixels=mnist.x_test[:1], timeout=1)


def healthcheck_command(rest_port: int) -> list[str]:
    """Dockerfile.serving's HEALTHCHECK command, pointed at ``rest_port``."""
    text = (REPO / "Dockerfile.serving").read_text().replace("\\\n", " ")
    (exec_form,) = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)
    command = json.loads(exec_form)
    return [part.replace("/8501", f"/{rest_port}") for part in command]


def test_serving_image_healthcheck_passes_only_when_the_model_is_available(server):
    port = int(server.rest_url.rsplit(":", 1)[1])
    healthy = subprocess.run(healthcheck_command(port), capture_output=True, timeout=10)
    assert healthy.returncode == 0, healthy.stderr
    down = subprocess.run(healthcheck_command(free_port()), capture_output=True, timeout=10)
    assert down.returncode != 0


def test_standin_status_and_metadata_have_tf_servings_shapes(server):
    """The shapes of TF Serving's REST replies (http_rest_api_util.cc; its test data
    saved_model_half_plus_two_2_versions_metadata.json): proto field names, defaults
    printed, int64 as strings. The gRPC client gives the same."""
    status = requests.get(f"{server.rest_url}/v1/models/mnist", timeout=10).json()
    assert set(status) == {"model_version_status"}
    version = status["model_version_status"][0]["version"]  # the newest comes first
    assert isinstance(version, str) and version.isdigit()  # int64 as a string
    assert status["model_version_status"][0] == {
        "version": version,
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    meta = requests.get(f"{server.rest_url}/v1/models/mnist/metadata", timeout=10).json()
    assert set(meta) == {"model_spec", "metadata"}
    assert meta["model_spec"] == {"name": "mnist", "signature_name": "", "version": version}
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    default = signatures[c.SIGNATURE_PIXELS]
    assert set(default) == {"inputs", "outputs", "method_name", "defaults"}
    assert default["method_name"] == "tensorflow/serving/predict"
    images = default["inputs"][c.INPUT_PIXELS]
    assert set(images) == {"dtype", "tensor_shape", "name"} and images["dtype"] == "DT_UINT8"
    dims = [{"size": "-1", "name": ""}] + [{"size": "28", "name": ""}] * 2
    assert images["tensor_shape"] == {"dim": dims, "unknown_rank": False}
    assert client.Server(server.grpc_target, False).status(c.MODEL_NAME) == status
    assert client.Server(server.grpc_target, False).metadata(c.MODEL_NAME) == meta


def test_standin_predict_replies_have_tf_servings_shapes(server, mnist):
    url = f"{server.rest_url}/v1/models/mnist:predict"
    pixels = mnist.x_test[:2].tolist()
    rows = requests.post(url, json={"instances": pixels}, timeout=10).json()
    assert set(rows) == {"predictions"} and len(rows["predictions"]) == 2
    assert set(rows["predictions"][0]) == {c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT}
    columns = requests.post(url, json={"inputs": pixels}, timeout=10).json()
    assert set(columns) == {"outputs"} and len(columns["outputs"][c.OUTPUT_DIGIT]) == 2
    error = requests.post(url, json={"instances": []}, timeout=10)
    assert error.status_code == 400 and set(error.json()) == {"error"}


@needs_this_runs_model
@pytest.mark.parametrize("protocol", ["--rest", "--grpc"])
def test_verify_agrees_with_the_run_that_made_the_served_model(server, trained_run, protocol):
    target = server.rest_url if protocol == "--rest" else server.grpc_target
    reported = json.loads((trained_run["run_dir"] / "metrics.json").read_text())
    export = trained_run["export_dir"]
    # --run names the report; without it, the served version's export names its run.
    for given, source in (
        (["--run", str(trained_run["run_dir"])], f"(run {trained_run['run_dir']})"),
        (["--export-dir", str(export)], f"(export {export / '1'}, run {trained_run['run_dir']})"),
    ):
        result = CliRunner().invoke(main, ["verify", protocol, target, *given])
        assert result.exit_code == 0, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"mnist version 1 {source}: served accuracy ")
        assert f" {reported['test']['accuracy']:.4f} = reported" in line
        assert "10000 images in 40 requests" in line and "p99" in line


@needs_this_runs_model
def test_verify_fails_in_one_line_against_another_runs_report(server, trained_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    report = json.loads((trained_run["run_dir"] / "metrics.json").read_text())
    report["test"]["accuracy"] -= 0.01
    (other / "metrics.json").write_text(json.dumps(report))
    result = CliRunner().invoke(main, ["verify", "--rest", server.rest_url, "--run", str(other)])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error:") and " != reported " in line and str(other) in line
    assert "mnist version 1 (run" in line
    result = CliRunner().invoke(main, ["verify", "--rest", server.rest_url, "--export-dir", "x"])
    assert result.exit_code == 1 and "give --export-dir" in result.output


def test_mnist_test_names_the_cache_and_options_that_exist(tmp_path):
    result = CliRunner().invoke(
        main,
        ["predict", "--rest", "http://127.0.0.1:9", "--mnist-test", "0:4"],
        env={"MNIST_JOB_CACHE_DIR": str(tmp_path / "empty")},
    )
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert str(tmp_path / "empty") in line and "--cache-dir" in line and "--data" not in line


# --------------------------------------------------------------------------- as strict as
# TF Serving: each case below is one rule the real server enforces (docs/serving.md).

standin_only = pytest.mark.skipif(
    bool(REAL_REST and REAL_GRPC),
    reason="MNIST_SERVING_REST/GRPC: this case starts stand-ins of its own",
)


def grpc_predict(target: str, tensor: np.ndarray, signature: str = "", **spec):
    """A raw PredictRequest, sent as given: (status code, details) or (OK, response)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", c.MODEL_NAME)
    request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs[c.INPUT_PIXELS].CopyFrom(tf.make_tensor_proto(tensor))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return grpc.StatusCode.OK, stub.Predict(request, timeout=30)
        except grpc.RpcError as err:
            return err.code(), err.details()


def test_batching_config_takes_every_request_the_contract_allows():
    """bundle_factory_util.h: max_batch_size is the largest request a batching server
    accepts, split or not."""
    batching = project_batching()
    assert max_input_batch_size(batching) >= c.MAX_BATCH
    if batching.enable_large_batch_splitting.value and batching.HasField(
        "max_execution_batch_size"
    ):
        assert batching.max_execution_batch_size.value <= batching.max_batch_size.value


def test_a_full_contract_batch_is_answered_and_one_more_is_refused(server, mnist):
    images = np.resize(mnist.x_test, (c.MAX_BATCH, 28, 28))
    for call, target in (
        (client.predict_rest, server.rest_url),
        (client.predict_grpc, server.grpc_target),
    ):
        answer = call(target, pixels=images, timeout=60)
        assert answer[c.OUTPUT_DIGIT].shape == (c.MAX_BATCH,)
    too_many = np.resize(mnist.x_test, (c.MAX_BATCH + 1, 28, 28)).tolist()
    reply = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict", json={"instances": too_many}, timeout=60
    )
    assert reply.status_code == 400 and set(reply.json()) == {"error"}


@standin_only
def test_a_batch_over_max_batch_size_is_refused_as_tf_serving_does(trained_run, mnist):
    batching = batching_parameters_type()()
    batching.max_batch_size.value = 128
    config = single_model_config(c.MODEL_NAME, trained_run["export_dir"])
    with StandIn(config, batching=batching) as standin:
        with pytest.raises(client.ServingError) as refused:
            client.predict_rest(standin.rest_url, pixels=mnist.x_test[:256])
        assert "HTTP 400: Task size 256 is larger than maximum input batch size 128" in str(
            refused.value
        )
        code, details = grpc_predict(standin.grpc_target, mnist.x_test[:129])
        assert code.name == "INVALID_ARGUMENT" and "Task size 129" in details


def test_pixels_of_another_dtype_are_refused_by_the_server(server, mnist):
    code, details = grpc_predict(server.grpc_target, mnist.x_test[:2].astype(np.float32))
    assert code.name == "INVALID_ARGUMENT"
    assert "Expects arg[0] to be uint8 but float is provided" in details
    floats = (mnist.x_test[:1] / 2).tolist()
    reply = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict", json={"instances": floats}, timeout=10
    )
    assert reply.status_code == 400
    assert "Type: Number is not of expected type: uint8" in reply.json()["error"]


def test_the_clients_convert_pixels_to_uint8_or_refuse_in_one_line(server, mnist):
    as_floats = mnist.x_test[:8].astype(np.float32)
    for call, target in (
        (client.predict_rest, server.rest_url),
        (client.predict_grpc, server.grpc_target),
    ):
        by_floats = call(target, pixels=as_floats)
        by_uint8 = call(target, pixels=mnist.x_test[:8])
        np.testing.assert_array_equal(by_floats[c.OUTPUT_DIGIT], by_uint8[c.OUTPUT_DIGIT])
        with pytest.raises(client.ServingError, match="whole numbers 0..255"):
            call(target, pixels=np.full((1, 28, 28), 300))
        with pytest.raises(client.ServingError, match="list of encoded images"):
            call(target, image_bytes=["not bytes"])


def test_an_unknown_signature_is_refused_with_tf_servings_codes(server, mnist):
    code, details = grpc_predict(server.grpc_target, mnist.x_test[:1], signature="nope")
    assert code.name == "FAILED_PRECONDITION"
    assert details == 'Serving signature key "nope" not found.'
    body = {"signature_name": "nope", "instances": mnist.x_test[:1].tolist()}
    reply = requests.post(f"{server.rest_url}/v1/models/mnist:predict", json=body, timeout=10)
    assert reply.status_code == 400
    assert reply.json() == {"error": 'Serving signature name: "nope" not found in signature def'}


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/models/mnist/predict"),
        ("POST", "/v1/models/mnist/versions/x:predict"),
        ("GET", "/v1/models/mnist:predict"),
    ],
)
def test_a_malformed_path_is_a_bad_request(server, method, path):
    reply = requests.request(method, f"{server.rest_url}{path}", json={}, timeout=10)
    assert reply.status_code == 400
    assert reply.json() == {"error": f"Malformed request: {method} {path}"}


def test_a_path_outside_the_api_is_not_found(server):
    assert requests.get(f"{server.rest_url}/v2/models/mnist", timeout=10).status_code == 404


@pytest.fixture(scope="module")
def two_versions(trained_run, tmp_path_factory):
    """A model base path holding versions 1 and 2 (the same export twice)."""
    base = tmp_path_factory.mktemp("two") / "mnist"
    for version in ("1", "2"):
        shutil.copytree(trained_run["version_dir"], base / version)
    return base


def project_models_config(base_path):
    """serving/models.config, parsed as the server parses it, pointed at ``base_path``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (REPO / "serving/models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    config.model_config_list.config[0].base_path = str(base_path)
    return config


def versions(status: dict) -> list[str]:
    return [entry["version"] for entry in status["model_version_status"]]


@standin_only
def test_the_project_config_serves_only_the_newest_version(two_versions, mnist):
    with StandIn(project_models_config(two_versions)) as standin:
        assert versions(client.Server(standin.rest_url, True).status(c.MODEL_NAME)) == ["2"]
        assert versions(client.Server(standin.grpc_target, False).status(c.MODEL_NAME)) == ["2"]
        for call, target in (
            (client.predict_rest, standin.rest_url),
            (client.predict_grpc, standin.grpc_target),
        ):
            with pytest.raises(client.ServingError) as refused:
                call(target, pixels=mnist.x_test[:1], version=1)
            assert "Servable not found for request: Specific(mnist, 1)" in str(refused.value)
            assert call(target, pixels=mnist.x_test[:1], version=2)[c.OUTPUT_DIGIT].shape == (1,)
        reply = requests.get(f"{standin.rest_url}/v1/models/mnist/versions/1", timeout=10)
        assert reply.status_code == 404
        assert reply.json() == {"error": "Could not find version 1 of model mnist"}


@standin_only
def test_every_version_is_listed_newest_first_under_all(two_versions):
    config = project_models_config(two_versions)
    config.model_config_list.config[0].model_version_policy.all.SetInParent()
    with StandIn(config) as standin:
        assert versions(client.Server(standin.rest_url, True).status(c.MODEL_NAME)) == ["2", "1"]
        assert versions(client.Server(standin.grpc_target, False).status(c.MODEL_NAME)) == [
            "2",
            "1",
        ]


@standin_only
def test_version_labels_need_the_flag_at_startup_and_name_versions(two_versions, mnist):
    from tests.tf_serving_standin import StartupError

    config = project_models_config(two_versions)
    model = config.model_config_list.config[0]
    model.model_version_policy.specific.versions.append(1)
    model.version_labels["stable"] = 1
    # Labels are set before the first versions load: without the flag, no start.
    with pytest.raises(StartupError, match="assign label to version 1 of model mnist"):
        StandIn(config)
    model.version_labels["canary"] = 2  # never loaded: allowed, but answers NOT_FOUND
    with StandIn(config, allow_version_labels_for_unavailable_models=True) as standin:
        url = f"{standin.rest_url}/v1/models/mnist/labels/stable:predict"
        reply = requests.post(url, json={"instances": mnist.x_test[:1].tolist()}, timeout=10)
        assert reply.status_code == 200
        code, response = grpc_predict(standin.grpc_target, mnist.x_test[:1], label="stable")
        assert code.name == "OK" and response.model_spec.version.value == 1
        for label, status, error in (
            ("nope", 400, "Unrecognized servable version label: nope"),
            ("canary", 404, "Servable not found for request: Specific(mnist, 2)"),
        ):
            reply = requests.post(
                url.replace("stable", label),
                json={"instances": mnist.x_test[:1].tolist()},
                timeout=10,
            )
            assert (reply.status_code, reply.json()) == (status, {"error": error})
        assert versions(client.Server(standin.rest_url, True).status(c.MODEL_NAME)) == ["1"]


@standin_only
def test_reply_shapes_follow_json_tensor_cc(tmp_path):
    """One output: bare values; strings raw unless the output's name ends in _bytes."""

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def double(self, x):
            return {"y": 2 * x}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def text(self, x):
            words = tf.strings.as_string(x, precision=1)
            return {"word": words, "word_bytes": words}

    module = Doubler()
    tf.saved_model.save(
        module,
        str(tmp_path / "m" / "1"),
        signatures={"serving_default": module.double, "text": module.text},
    )
    with StandIn(single_model_config("m", tmp_path / "m")) as standin:
        url = f"{standin.rest_url}/v1/models/m:predict"

        def ask(body):
            return requests.post(url, json=body, timeout=10).json()

        assert ask({"instances": [1.0, 2.5]}) == {"predictions": [2.0, 5.0]}
        assert ask({"inputs": [1.0, 2.5]}) == {"outputs": [2.0, 5.0]}
        rows = ask({"signature_name": "text", "instances": [1.0]})["predictions"]
        assert rows == [{"word": "1.0", "word_bytes": {"b64": "MS4w"}}]
        columns = ask({"signature_name": "text", "inputs": {"x": [1.0]}})["outputs"]
        assert columns == {"word": ["1.0"], "word_bytes": [{"b64": "MS4w"}]}


@standin_only
def test_the_server_takes_flags_only_as_flag_equals_value(trained_run, capsys):
    from tests.tf_serving_standin import StartupError, from_flags

    config_file = trained_run["run_dir"].parent / "standin-models.config"
    config_file.write_text(
        (REPO / "serving/models.config")
        .read_text()
        .replace("/models/mnist", str(trained_run["export_dir"]))
    )
    # --flag value: the flag is unknown, so there is no model to serve.
    with pytest.raises(StartupError, match="model_config_file are empty"):
        from_flags(["--port=0", "--model_config_file", str(config_file)])
    assert f"unknown argument: --model_config_file\nunknown argument: {config_file}" in (
        capsys.readouterr().out
    )
    batching = str(REPO / "serving/batching.config")
    with pytest.raises(StartupError, match="without setting server_options.enable_batching"):
        from_flags([f"--model_config_file={config_file}", f"--batching_parameters_file={batching}"])
    with pytest.raises(SystemExit, match="Couldn't interpret value 85x01 for flag port"):
        from_flags([f"--model_config_file={config_file}", "--port=85x01"])
    standin = from_flags(
        [
            f"--model_config_file={config_file}",
            "--port=0",
            "--rest_api_port",  # a space: REST stays off, as in the real server
            "8501",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
        ]
    )
    assert standin.http is None and standin.models.max_batch == c.MAX_BATCH
    standin.stop()


@standin_only
def test_a_rollout_from_canary_to_stable_and_back(two_versions, trained_run, tmp_path, mnist):
    from tests.tf_serving_standin import RequestError, from_flags

    config = tmp_path / "rollout.config"

    def rollout(*args):
        result = CliRunner().invoke(main, ["rollout", *args])
        assert result.exit_code == 0, result.output
        return result.output

    def labels():
        from serving.rollout import read_config

        return dict(read_config(config, c.MODEL_NAME)[1].version_labels)

    rollout("start", "--config", str(config), "--base-path", str(two_versions), "1")
    standin = from_flags(
        [
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
            "--allow_version_labels_for_unavailable_models=true",
            "--port=0",
            f"--rest_api_port={free_port()}",
        ]
    ).start()
    try:
        server = ["--config", str(config), "--grpc", standin.grpc_target, "--wait", "60",
                  "--export-dir", str(two_versions)]  # fmt: skip
        assert "version 2 is canary" in rollout("canary", *server, "2")
        assert labels() == {"stable": 1, "canary": 2}
        canary = client.predict_rest(standin.rest_url, pixels=mnist.x_test[:4], version="canary")
        assert canary[c.OUTPUT_DIGIT].shape == (4,)
        promoted = rollout("promote", *server, "--run", str(trained_run["run_dir"]))
        assert promoted.endswith("\nmnist version 2 is stable\n") and " = reported " in promoted
        assert labels() == {"stable": 2, "canary": 2, "previous": 1}
        status = CliRunner().invoke(main, ["status", "--rest", standin.rest_url, "--label", "x"])
        assert json.loads(status.output)["model_version_status"][0]["version"] == "2"
        # A label moves only to a loaded version (server_core.cc), even with the flag.
        moved = project_models_config(two_versions)
        moved.model_config_list.config[0].version_labels["stable"] = 3
        with pytest.raises(RequestError, match="assign label to version 3"):
            standin.models.reload(moved)
        assert "version 1 is stable again" in rollout("rollback", *server)
        assert labels() == {"stable": 1}
        meta = client.Server(standin.grpc_target, False).metadata(c.MODEL_NAME, "stable")
        assert meta["model_spec"]["version"] == "1"
        # The unloaded version stays listed as END, as in the real server.
        table = rollout("status", "--config", str(config), "--rest", standin.rest_url)
        assert table.splitlines()[1:3] == ["      2  END", "      1  AVAILABLE  stable"]
        shown = json.loads(rollout("status", "--config", str(config), "--grpc",
                                   standin.grpc_target, "--format", "json"))  # fmt: skip
        assert shown["versions"][1] == {"version": 1, "state": "AVAILABLE", "labels": ["stable"],
                                        "error": ""}  # fmt: skip
        assert shown["config"] == {"path": str(config), "versions": [1], "labels": {"stable": 1}}
    finally:
        standin.stop()


@standin_only
def test_a_rollout_step_that_cannot_succeed_fails_at_once_and_leaves_the_config(
    two_versions, tmp_path
):
    from tests.tf_serving_standin import from_flags

    config = tmp_path / "rollout.config"
    base = tmp_path / "mnist"
    shutil.copytree(two_versions / "1", base / "1")
    (base / "3").mkdir()  # a version folder with no SavedModel in it: its load fails
    relative = CliRunner().invoke(main, ["rollout", "start", "--config", str(config),
                                         "--base-path", "models/mnist", "1"])  # fmt: skip
    assert relative.exit_code == 1 and "absolute path" in relative.output
    assert not config.exists()
    CliRunner().invoke(main, ["rollout", "start", "--config", str(config), "--base-path",
                              str(base), "1"])  # fmt: skip
    written = config.read_text()
    standin = from_flags([f"--model_config_file={config}", "--port=0", "--rest_api_port=0",
                          "--model_config_file_poll_wait_seconds=1",
                          "--allow_version_labels_for_unavailable_models"]).start()  # fmt: skip
    try:
        step = ["--config", str(config), "--grpc", standin.grpc_target, "--export-dir", str(base)]
        started = time.monotonic()
        for version, message in (("5", f"{base}: no version 5 to load"),
                                 ("3", "version 3 failed to load: NOT_FOUND")):  # fmt: skip
            result = CliRunner().invoke(main, ["rollout", "canary", *step, version])
            assert result.exit_code == 1 and message in result.output, result.output
            assert config.read_text() == written
        assert time.monotonic() - started < 30  # not the whole --wait of 120 s
        for command in ("promote", "rollback"):
            result = CliRunner().invoke(main, ["rollout", command, *step])
            assert result.exit_code == 1 and "label for mnist" in result.output
        assert config.read_text() == written
    finally:
        standin.stop()


@standin_only
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m, config: config.model_config_list.config.add().CopyFrom(m),
         "Illegal to list model mnist multiple times in config list"),
        (lambda m, config: setattr(m, "base_path", "models/mnist"),
         "Expected model mnist to have an absolute path or URI; got base_path()=models/mnist"),
        (lambda m, config: setattr(m, "model_platform", "pytorch"),
         "PlatformConfigMap has no entry for platform pytorch"),
    ],
)  # fmt: skip
def test_the_standin_refuses_configs_as_server_core_does(two_versions, change, message):
    from tests.tf_serving_standin import StartupError

    config = project_models_config(two_versions)
    change(config.model_config_list.config[0], config)
    with pytest.raises(StartupError, match=re.escape(message)):
        StandIn(config)


def load_report(*args, exit_code: int = 0) -> dict:
    result = CliRunner().invoke(main, ["load", *args, "--format", "json"])
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_load_reports_throughput_latency_and_errors_by_code(server):
    for flag, target in (("--rest", server.rest_url), ("--grpc", server.grpc_target)):
        report = load_report(flag, target, "--requests", "24", "--concurrency", "3",
                             "--batch-size", "8")  # fmt: skip
        assert (report["requests"], report["answered"], report["errors"]) == (24, 24, {})
        assert report["images_per_second"] > report["requests_per_second"] > 0
        latency = report["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        for signature in (c.SIGNATURE_PIXELS_FLOAT, c.SIGNATURE_IMAGE_BYTES):
            report = load_report(flag, target, "--duration", "1", "--signature", signature)
            assert report["answered"] >= 1 and report["errors"] == {}
    assert report["version"] == 1
    refused = load_report("--rest", server.rest_url, "--label", "nope", "--requests", "5",
                          exit_code=1)  # fmt: skip
    assert refused["errors"] == {"HTTP 400": 5} and refused["answered"] == 0
    assert "Unrecognized servable version label: nope" in refused["first_errors"]["HTTP 400"]
    refused = load_report("--grpc", server.grpc_target, "--version", "99", "--requests", "3",
                          "--max-error-rate", "1")  # fmt: skip
    assert refused["errors"] == {"NOT_FOUND": 3}


def test_load_needs_a_bound():
    result = CliRunner().invoke(main, ["load", "--rest", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "--requests" in result.output


def test_load_against_a_stopped_server_fails_with_the_first_error_of_each_code():
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["load", "--rest", url, "--requests", "4"])
    assert result.exit_code == 1
    assert "UNAVAILABLE 4: " in result.stdout and "cannot connect" in result.stdout
    assert "error: 4 of 4 requests failed; --max-error-rate is 0" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "--grpc", "http://localhost:8500"], "takes no scheme; write localhost:8500"),
        (["status", "--grpc", "a b"], "expected a gRPC target HOST:PORT"),
        (["status", "--rest", "ftp://host:8501"], "expected a REST address"),
        (["status", "--rest", "http://host:x"], "expected a REST address"),
        (["predict", "--rest", "h:1", "--mnist-test", "5:2"], "expected 0 <= START < STOP"),
        (["predict", "--rest", "h:1"], "nothing to send"),
        (["load", "--rest", "h:1", "--requests", "1", "--max-error-rate", "2"], "0<=x<=1"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_addresses_without_a_scheme_mean_http():
    assert client.rest_address("127.0.0.1:8501") == "http://127.0.0.1:8501"
    assert client.rest_address("https://h/") == "https://h"
    assert client.grpc_address("[::1]:8500") == "[::1]:8500"


def test_the_serving_cli_prints_its_version_and_deprecates_json(tmp_path):
    from importlib.metadata import version

    assert CliRunner().invoke(main, ["--version"]).output.endswith(f"{version('mnist-job')}\n")
    (tmp_path / "1" / "assets.extra").mkdir(parents=True)
    (tmp_path / "1" / "assets.extra" / c.CARD_JSON).write_text('{"a": 1}')
    result = CliRunner().invoke(main, ["card", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"a": 1}
    assert "--json is deprecated; use --format json" in result.stderr


def test_rest_commands_import_no_tensorflow_pandas_or_matplotlib():
    code = (
        "import sys; from serving.cli import main; import serving.rollout, serving.verify, "
        "serving.load; heavy = {'tensorflow', 'pandas', 'matplotlib', 'job.report', 'job.cli'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr


def test_grpc_predict_prints_nothing_of_tensorflows(server):
    done = subprocess.run(
        [sys.executable, "-m", "serving", "predict", "--grpc", server.grpc_target,
         "--mnist-test", "0:2"],
        capture_output=True, text=True, cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"{server.grpc_target}: mnist version 1 answered\n"


def test_a_rollout_waits_through_start_loading_and_an_old_end_but_not_a_failed_load():
    from serving.rollout import loaded

    ok = {"error_code": "OK", "error_message": ""}
    for state in ("START", "LOADING", "UNLOADING", "END"):
        assert loaded({"version": "2", "state": state, "status": ok}) is False
    assert loaded({"version": "2", "state": "AVAILABLE", "status": ok}) is True
    failed = {"error_code": "NOT_FOUND", "error_message": "no SavedModel"}
    with pytest.raises(client.ServingError, match="version 2 failed to load: NOT_FOUND"):
        loaded({"version": "2", "state": "END", "status": failed})
