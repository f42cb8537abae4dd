"""A STAND-IN for TensorFlow Serving, for tests only.

So that the clients can be tested without a TensorFlow Serving binary, this module serves
an exported SavedModel through TF Serving's documented REST API (predict in row and
columnar form, model status, metadata, ``{"error": ...}`` replies) and its gRPC
PredictionService and ModelService, built on the real generated stubs from
tensorflow-serving-api. It is not a server to deploy: use the real container
(``make serve``; see the README).

    python -m tests.tf_serving_standin --model-base-path models/mnist \
        --rest-port 8501 --grpc-port 8500
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import threading
from concurrent import futures
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


class RequestError(Exception):
    def __init__(
        self,
        message: str,
        status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT,
    ):
        super().__init__(message)
        self.status = status
        self.code = code


class LoadedModels:
    """Every numbered version under one model base path, loaded with tf.saved_model.load."""

    def __init__(self, name: str, base_path: Path):
        self.name = name
        self.versions: dict[int, object] = {}
        self.signature_defs: dict[int, object] = {}
        for folder in sorted(base_path.iterdir()):
            if folder.name.isdigit():
                version = int(folder.name)
                self.versions[version] = tf.saved_model.load(str(folder))
                proto = saved_model_pb2.SavedModel()
                proto.ParseFromString((folder / "saved_model.pb").read_bytes())
                self.signature_defs[version] = proto.meta_graphs[0].signature_def
        if not self.versions:
            raise SystemExit(f"{base_path}: no numbered version folders")
        self.lock = threading.Lock()

    def resolve(self, name: str, version: int | None) -> int:
        if name != self.name:
            raise RequestError(
                f"Servable not found for request: Latest({name})",
                HTTPStatus.NOT_FOUND,
                grpc.StatusCode.NOT_FOUND,
            )
        if version is None:
            return max(self.versions)
        if version not in self.versions:
            raise RequestError(
                f"Servable not found for request: Specific({name}, {version})",
                HTTPStatus.NOT_FOUND,
                grpc.StatusCode.NOT_FOUND,
            )
        return version

    def signature(self, version: int, signature_name: str):
        signatures = self.versions[version].signatures
        name = signature_name or "serving_default"
        if name not in signatures:
            raise RequestError(f'Serving signature name: "{name}" not found in signature def')
        return signatures[name]

    def run(self, version: int, signature_name: str, inputs: dict[str, np.ndarray]) -> dict:
        fn = self.signature(version, signature_name)
        specs = fn.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise RequestError(
                f"input names {sorted(inputs)} do not match the signature's {sorted(specs)}"
            )
        tensors = {}
        for key, spec in specs.items():
            try:
                tensors[key] = tf.constant(inputs[key], dtype=spec.dtype)
            except (TypeError, ValueError) as exc:
                raise RequestError(
                    f"input {key}: cannot convert to {spec.dtype.name}: {exc}"
                ) from None
            if not spec.shape.is_compatible_with(tensors[key].shape):
                raise RequestError(f"input {key}: shape {tensors[key].shape} is not {spec.shape}")
        try:
            with self.lock:
                outputs = fn(**tensors)
        except tf.errors.InvalidArgumentError as exc:
            raise RequestError(exc.message.strip()) from None  # TF Serving passes it whole
        except ValueError as exc:
            raise RequestError(str(exc).strip().splitlines()[0]) from None
        return {key: value.numpy() for key, value in outputs.items()}

    def status(self, name: str, version: int | None):
        """GetModelStatusResponse, as the real server fills it (status OK, message "")."""
        versions = [self.resolve(name, version)] if version is not None else sorted(self.versions)
        self.resolve(name, None)
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in versions:
            entry = response.model_version_status.add()
            entry.version = v
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            entry.status.SetInParent()  # error_code OK, error_message ""
        return response


# --------------------------------------------------------------------------- REST


def _decode_value(value):
    """JSON instance values -> numpy; {"b64": "..."} becomes bytes as TF Serving does."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def _json_ready(array: np.ndarray):
    if array.dtype.kind in "SO":
        return [base64.b64encode(v).decode() for v in array.ravel()]
    return array.tolist()


def rest_predict(models: LoadedModels, name: str, version: int | None, body: bytes) -> dict:
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"JSON Parse error: {exc}") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise RequestError("Missing 'inputs' or 'instances' key (exactly one is needed)")
    version = models.resolve(name, version)
    fn = models.signature(version, request.get("signature_name", ""))
    input_names = list(fn.structured_input_signature[1])
    if "instances" in request:  # row format
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list")
        if all(isinstance(i, dict) and set(i) != {"b64"} for i in instances):
            inputs = {k: [_decode_value(i.get(k)) for i in instances] for k in input_names}
        elif len(input_names) == 1:
            inputs = {input_names[0]: [_decode_value(i) for i in instances]}
        else:
            raise RequestError("instances must be objects naming each input")
        outputs = models.run(version, request.get("signature_name", ""), inputs)
        rows = [{k: _json_ready(v)[i] for k, v in outputs.items()} for i in range(len(instances))]
        return {"predictions": rows}
    columns = request["inputs"]
    if not isinstance(columns, dict):
        if len(input_names) != 1:
            raise RequestError("'inputs' must be an object naming each input")
        columns = {input_names[0]: columns}
    inputs = {k: _decode_value(v) for k, v in columns.items()}
    outputs = models.run(version, request.get("signature_name", ""), inputs)
    return {"outputs": {k: _json_ready(v) for k, v in outputs.items()}}


def rest_metadata(models: LoadedModels, name: str, version: int | None) -> dict:
    version = models.resolve(name, version)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in models.signature_defs[version].items():
        signature_map.signature_def[key].CopyFrom(value)
    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    # http_rest_api_util.cc: the model spec and the SignatureDefMap printed apart, each with
    # proto field names and default values, joined as {"model_spec", "metadata"}.
    return {
        "model_spec": proto_json(spec),
        "metadata": {"signature_def": proto_json(signature_map)},
    }


def proto_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
    r"(?P<suffix>/metadata|:predict)?$"
)


def make_rest_handler(models: LoadedModels):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, status: HTTPStatus, body: dict) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self, method: str) -> None:
            match = URL.match(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                if not match:
                    raise RequestError(
                        f"Malformed request: {method} {self.path}", HTTPStatus.NOT_FOUND
                    )
                name, suffix = match["name"], match["suffix"]
                version = int(match["version"]) if match["version"] else None
                if method == "POST" and suffix == ":predict":
                    self._reply(HTTPStatus.OK, rest_predict(models, name, version, body))
                elif method == "GET" and suffix == "/metadata":
                    self._reply(HTTPStatus.OK, rest_metadata(models, name, version))
                elif method == "GET" and suffix is None:
                    self._reply(
                        HTTPStatus.OK,
                        # get_model_status.proto names its JSON fields in snake case itself
                        json_format.MessageToDict(
                            models.status(name, version),
                            always_print_fields_with_no_presence=True,
                        ),
                    )
                else:
                    raise RequestError(
                        f"Malformed request: {method} {self.path}", HTTPStatus.NOT_FOUND
                    )
            except RequestError as exc:
                self._reply(exc.status, {"error": str(exc)})
            except Exception as exc:  # the stand-in answers, it never dies on a request
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": repr(exc)})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


# --------------------------------------------------------------------------- gRPC


def _version_of(spec) -> int | None:
    return spec.version.value if spec.HasField("version") else None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: LoadedModels):
        self.models = models

    def Predict(self, request, context):
        try:
            version = self.models.resolve(request.model_spec.name, _version_of(request.model_spec))
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.models.run(version, request.model_spec.signature_name, inputs)
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        try:
            version = self.models.resolve(request.model_spec.name, _version_of(request.model_spec))
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Metadata field signature_def is the only one supported",
            )
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.models.signature_defs[version].items():
            signature_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signature_map)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models: LoadedModels):
        self.models = models

    def GetModelStatus(self, request, context):
        try:
            statuses = self.models.status(request.model_spec.name, _version_of(request.model_spec))
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        return statuses


# --------------------------------------------------------------------------- running it


class StandIn:
    """Both servers on 127.0.0.1, in threads; ``with StandIn(...) as s:`` stops them after."""

    def __init__(
        self, model_base_path: Path, name: str = "mnist", rest_port: int = 0, grpc_port: int = 0
    ):
        self.models = LoadedModels(name, Path(model_base_path))
        self.http = ThreadingHTTPServer(("127.0.0.1", rest_port), make_rest_handler(self.models))
        self.rest_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.models), self.grpc
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.models), self.grpc
        )
        port = self.grpc.add_insecure_port(f"127.0.0.1:{grpc_port}")
        self.grpc_target = f"127.0.0.1:{port}"

    def start(self) -> StandIn:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.grpc.start()
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(grace=None)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Stand-in for TF Serving (tests only).")
    parser.add_argument("--model-base-path", type=Path, required=True)
    parser.add_argument("--model-name", default="mnist")
    parser.add_argument("--rest-port", type=int, default=8501)
    parser.add_argument("--grpc-port", type=int, default=8500)
    args = parser.parse_args()
    server = StandIn(args.model_base_path, args.model_name, args.rest_port, args.grpc_port)
    server.start()
    print(
        f"stand-in serving {args.model_name}: REST {server.rest_url}, gRPC {server.grpc_target}",
        flush=True,
    )
    threading.Event().wait()


if __name__ == "__main__":
    main()
