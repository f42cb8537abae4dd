"""A STAND-IN for TensorFlow Serving, for tests only.

So that the clients can be tested without a TensorFlow Serving binary, this module serves
exported SavedModels through TF Serving's REST API and its gRPC PredictionService and
ModelService (the real generated stubs from tensorflow-serving-api), taking the real
server's flags and config files. Every rule it follows cites the TF Serving (or TensorFlow)
source it mirrors, in a comment beside it; docs/serving.md has the table. It is not a
server to deploy: use the real container (``make serve``; see the README).

    python -m tests.tf_serving_standin --model_name=mnist --model_base_path=$PWD/models/mnist \
        --rest_api_port=8501 --port=8500
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
from concurrent import futures
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

# What each gRPC code becomes over REST: model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
}


class RequestError(Exception):
    """A request the real server refuses, with its status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code

    @property
    def http_status(self) -> HTTPStatus:
        return HTTP_STATUS.get(self.code, HTTPStatus.INTERNAL_SERVER_ERROR)


def type_string(dtype: tf.DType) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> "float", DT_UINT8 -> "uint8"."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)[3:].lower()


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, message)


class StartupError(SystemExit):
    """The real server would not start: main.cc prints the status and returns -1."""

    def __init__(self, message: str):
        super().__init__(f"Failed to start server. Error: {message}")


# --------------------------------------------------------------------------- configs


def batching_parameters_type():
    """BatchingParameters (servables/tensorflow/session_bundle_config.proto), which
    tensorflow-serving-api does not ship, rebuilt field for field so that a config file
    parses here exactly as the server's ParseProtoTextFile parses it."""
    F = descriptor_pb2.FieldDescriptorProto
    int64, string, boolean = (f".google.protobuf.{t}Value" for t in ("Int64", "String", "Bool"))
    fields = [
        ("max_batch_size", 1, F.TYPE_MESSAGE, int64),
        ("batch_timeout_micros", 2, F.TYPE_MESSAGE, int64),
        ("max_enqueued_batches", 3, F.TYPE_MESSAGE, int64),
        ("num_batch_threads", 4, F.TYPE_MESSAGE, int64),
        ("thread_pool_name", 5, F.TYPE_MESSAGE, string),
        ("allowed_batch_sizes", 6, F.TYPE_INT64, None),
        ("pad_variable_length_inputs", 7, F.TYPE_BOOL, None),
        ("enable_large_batch_splitting", 8, F.TYPE_MESSAGE, boolean),
        ("max_execution_batch_size", 9, F.TYPE_MESSAGE, int64),
    ]
    file = descriptor_pb2.FileDescriptorProto(
        name="standin/session_bundle_config.proto",
        package="standin",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    message = file.message_type.add(name="BatchingParameters")
    for name, number, kind, type_name in fields:
        label = F.LABEL_REPEATED if name == "allowed_batch_sizes" else F.LABEL_OPTIONAL
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("standin.BatchingParameters"))


def parse_text_proto(path: str, message):
    """util/file_probing_env + ParseProtoTextFile (model_servers/server.cc): a file that does
    not parse stops the server."""
    try:
        return text_format.Parse(Path(path).read_text(), message)
    except (OSError, text_format.ParseError) as exc:
        raise StartupError(f"INVALID_ARGUMENT: {path}: {exc}") from None


def single_model_config(
    name: str, base_path: Path | str
) -> model_server_config_pb2.ModelServerConfig:
    """model_servers/server.cc, BuildSingleModelConfig: --model_name and --model_base_path."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = name, str(base_path), "tensorflow"
    return config


def max_input_batch_size(batching) -> int | None:
    """The largest request a batching server accepts: servables/tensorflow/
    bundle_factory_util.h (GetQueueOptions) sets input_batch_size_limit from
    max_batch_size, with or without large-batch splitting; TensorFlow's
    shared_batch_scheduler.h (QueueOptions) defaults it to 1000."""
    if batching is None:
        return None
    return batching.max_batch_size.value if batching.HasField("max_batch_size") else 1000


# --------------------------------------------------------------------------- models


class Servable:
    """One loaded version: the functions to call and the SignatureDefs to describe."""

    def __init__(self, folder: Path):
        self.loaded = tf.saved_model.load(str(folder))  # keeps the functions' variables
        self.functions = self.loaded.signatures
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((folder / "saved_model.pb").read_bytes())
        self.signature_defs = proto.meta_graphs[0].signature_def


def versions_to_serve(model_config, on_disk: list[int]) -> list[int]:
    """sources/storage_path/file_system_storage_path_source.cc: `latest` serves the
    num_versions largest (at least 1; the default policy), `all` every one, `specific`
    those listed that exist."""
    policy = model_config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return sorted(on_disk)
    if choice == "specific":
        return sorted(set(policy.specific.versions) & set(on_disk))
    keep = max(policy.latest.num_versions, 1) if choice == "latest" else 1
    return sorted(on_disk)[-keep:]


def validate_config_list(config) -> None:
    """server_core.cc, ValidateModelConfigList, GetPlatform and CreateAdapter: unique
    names, absolute base paths or URIs (UriIsRelativePath, tsl's io::ParseURI), and a
    platform the server has (main.cc configures "tensorflow")."""
    names = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise invalid(f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
        if not re.match(r"/|[A-Za-z][0-9A-Za-z.]*://", model.base_path):
            raise invalid(
                f"Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path}"
            )
        if not model.model_platform:
            raise invalid(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}"
            )
        if model.model_platform != "tensorflow":
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"PlatformConfigMap has no entry for platform {model.model_platform}",
            )


class Models:
    """What a ServerCore holds: each configured model's loaded versions and labels."""

    def __init__(self, config, batching=None, allow_labels_for_unavailable: bool = False):
        self.max_batch = max_input_batch_size(batching)
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self.versions: dict[str, dict[int, Servable]] = {}
        # Versions that were unloaded or failed to load: (error code, message); the server
        # keeps listing them as END (servable_state_monitor.cc keeps kEnd states; only
        # ForgetUnloadedServableStates, which no server code calls, drops them).
        self.ended: dict[str, dict[int, tuple[int, str]]] = {}
        self.labels: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()
        try:
            self.reload(config)
        except RequestError as exc:
            raise StartupError(f"{exc.code.name}: {exc}") from None
        failed = [m for gone in self.ended.values() for _, m in gone.values() if m]
        if failed:  # server_core.cc waits for the first config's versions: a failure stops it
            raise StartupError(failed[0])

    def reload(self, config) -> None:
        """server_core.cc, ReloadConfig: the labels first (UpdateModelVersionLabelMap),
        checked against the versions loaded so far, then the versions the policies name. A
        label may only name an available version unless
        --allow_version_labels_for_unavailable_models, and even then not move an existing
        label to an unavailable one. So the first config's labels need that flag
        (tensorflow/serving#1608), and a label moves to a new version only once it loads."""
        validate_config_list(config)
        labels = {}
        for model in config.model_config_list.config:
            loaded = self.versions.get(model.name, {})
            for label, version in sorted(model.version_labels.items()):
                existing = self.labels.get(model.name, {}).get(label)
                allowed = self.allow_labels_for_unavailable and existing in (None, version)
                if version not in loaded and not allowed:
                    raise RequestError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference",
                    )
            labels[model.name] = dict(model.version_labels)
        self.labels = labels
        versions, ended = {}, {name: dict(gone) for name, gone in self.ended.items()}
        for model in config.model_config_list.config:
            base, current = Path(model.base_path), self.versions.get(model.name, {})
            gone, served = ended.setdefault(model.name, {}), {}
            # file_system_storage_path_source.cc: only all-digit folder names are versions.
            on_disk = (
                [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
            )
            for v in versions_to_serve(model, on_disk):
                try:
                    served[v] = current.get(v) or Servable(base / str(v))
                    gone.pop(v, None)
                except Exception as exc:  # basic_manager.cc: a failed load ends in kEnd
                    # TensorFlow's C++ loader (cc/saved_model/reader.cc) says NOT_FOUND for
                    # a folder without a SavedModel, where its Python loader raises OSError.
                    code = getattr(exc, "error_code", 5 if isinstance(exc, OSError) else 2)
                    gone[v] = (code, " ".join(str(exc).split())[:300])
            gone.update({v: (0, "") for v in set(current) - set(served)})
            versions[model.name] = served
        self.versions, self.ended = versions, ended

    def resolve(self, name: str, version: int | None, label: str | None) -> tuple[int, Servable]:
        """The servable a ModelSpec names (server_core.cc ServableRequestFromModelSpec and
        GetModelVersionForLabel; core/basic_manager.cc and core/manager.h for the message)."""
        if label is not None:
            if label not in self.labels.get(name, {}):
                raise invalid(f"Unrecognized servable version label: {label}")
            version = self.labels[name][label]
        loaded = self.versions.get(name, {})
        if version is None:
            if not loaded:
                raise not_found(f"Servable not found for request: Latest({name})")
            version = max(loaded)
        if version not in loaded:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return version, loaded[version]

    def status(self, name: str, version: int | None):
        """model_servers/get_model_status_impl.cc; newest first, as core/
        servable_state_monitor.h orders its VersionMap (std::greater)."""
        loaded, ended = self.versions.get(name, {}), self.ended.get(name, {})
        known = set(loaded) | set(ended)
        if version is not None and version not in known:
            raise not_found(f"Could not find version {version} of model {name}")
        if not known:
            raise not_found(f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in [version] if version is not None else sorted(known, reverse=True):
            entry = response.model_version_status.add()
            entry.version = v
            entry.status.SetInParent()  # error_code OK, error_message ""
            if v in loaded:
                entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            else:
                entry.state = get_model_status_pb2.ModelVersionStatus.END
                entry.status.error_code, entry.status.error_message = ended[v]
        return response

    def metadata(
        self, name, version, label, fields
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """servables/tensorflow/get_model_metadata_impl.cc."""
        if not fields:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        version, servable = self.resolve(name, version, label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def predict(self, servable: Servable, signature_name: str, inputs: dict[str, np.ndarray]):
        """servables/tensorflow/predict_util.cc (RunPredict, PreProcessPrediction) -> the
        signature's outputs as arrays, or the real server's error."""
        name = signature_name or "serving_default"
        if name not in servable.signature_defs:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            )
        expected = servable.signature_defs[name].inputs
        if set(inputs) != set(expected):
            sent, wanted = sorted(inputs), sorted(expected)
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sent)}}}) != len({{{','.join(wanted)}}}). "
                f"Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
                f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}."
            )
        if self.max_batch is not None:
            # batching/batching_session.cc puts the request in the queue as one task of
            # dim 0 rows; TensorFlow's shared_batch_scheduler.h refuses a larger one.
            first = next(iter(inputs.values()))
            size = first.shape[0] if first.ndim else 1
            if size > self.max_batch:
                raise invalid(
                    f"Task size {size} is larger than maximum input batch size {self.max_batch}"
                )
        for i, key in enumerate(sorted(inputs)):
            # No casting: TensorFlow's FunctionCallFrame::SetArgs (framework/function.cc)
            # refuses a fed tensor of another dtype.
            want = tf.dtypes.as_dtype(expected[key].dtype)
            got = tf.string if inputs[key].dtype.kind in "OSU" else tf.as_dtype(inputs[key].dtype)
            if want != got:
                raise invalid(
                    f"Expects arg[{i}] to be {type_string(want)} but {type_string(got)} is provided"
                )
        try:
            with self.lock:
                outputs = servable.functions[name](**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.InvalidArgumentError as exc:
            raise invalid(exc.message.strip()) from None  # TF Serving passes it whole
        except (TypeError, ValueError) as exc:
            raise invalid(str(exc).strip().splitlines()[0]) from None
        return {key: value.numpy() for key, value in outputs.items()}


# --------------------------------------------------------------------------- REST JSON
# util/json_tensor.cc: JSON values -> tensors of the signature's dtypes, tensors -> JSON.

JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b", "O": "", "S": ""}


def _debug(value) -> str:
    """JsonValueToDebugString: compact, cut at 256 bytes."""
    return json.dumps(value, separators=(",", ":"))[:256]


def _json_type(value) -> str:
    """JsonTypeString."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _leaf_fits(value, dtype: tf.DType) -> bool:
    """AddValueToTensor: an integer type takes JSON integers only, a float type any number,
    a string type strings (and {"b64": ...}), bool true and false."""
    if dtype == tf.string:
        return isinstance(value, str) or _is_b64(value)
    if dtype == tf.bool:
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return dtype.is_floating or isinstance(value, int)


def _first_misfit(value, dtype: tf.DType):
    if isinstance(value, list):
        for item in value:
            found = _first_misfit(item, dtype)
            if found is not None:
                return found
        return None
    return None if _leaf_fits(value, dtype) else value


def _decode_strings(value):
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise invalid("Unable to base64 decode") from None
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    return value.encode()


def json_to_array(value, dtype: tf.DType) -> np.ndarray:
    """FillTensorProto with AddValueToTensor: refuses a value of another JSON type."""
    if dtype == tf.string:
        misfit = _first_misfit(value, dtype)
        if misfit is None:
            return np.array(_decode_strings(value), dtype=object)
    else:
        try:
            array = np.array(value)
        except ValueError:
            raise invalid(f"JSON Value: {_debug(value)} has an inconsistent shape") from None
        if array.dtype.kind in JSON_KINDS.get(np.dtype(dtype.as_numpy_dtype).kind, ""):
            return array.astype(dtype.as_numpy_dtype)
        misfit = _first_misfit(value, dtype)
        misfit = value if misfit is None else misfit
    raise invalid(
        f"JSON Value: {_debug(misfit)} Type: {_json_type(misfit)} "
        f"is not of expected type: {type_string(dtype)}"
    )


def _json_values(array: np.ndarray, as_bytes: bool):
    """AddSingleValueAndAdvance: strings raw, or {"b64": ...} for a name ending in _bytes
    (IsNamedTensorBytes)."""
    if array.dtype.kind not in "SO":
        return array.tolist()
    if as_bytes:
        leaf = lambda v: {"b64": base64.b64encode(v).decode()}  # noqa: E731
    else:
        leaf = lambda v: v.decode("utf-8", "replace")  # noqa: E731
    return np.vectorize(leaf, otypes=[object])(array).tolist() if array.size else array.tolist()


def rows_json(outputs: dict[str, np.ndarray]) -> dict:
    """MakeRowFormatJsonFromTensors: one entry per batch row; bare values when there is one
    output, an object of outputs when there are more."""
    values = {k: _json_values(v, k.endswith("_bytes")) for k, v in sorted(outputs.items())}
    sizes = {len(v) for v in outputs.values()}
    if len(sizes) != 1:
        raise invalid("Tensor name: outputs have inconsistent batch sizes")
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(sizes.pop())]}


def columns_json(outputs: dict[str, np.ndarray]) -> dict:
    """MakeColumnarFormatJsonFromTensors: the one output bare, or an object of outputs."""
    values = {k: _json_values(v, k.endswith("_bytes")) for k, v in sorted(outputs.items())}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


def inputs_from_json(request, input_dtypes: dict[str, tf.DType]) -> tuple[dict, bool]:
    """FillPredictRequestFromJson -> (arrays by input name, whether the row format was used)."""
    has_rows, has_columns = "instances" in request, "inputs" in request
    if has_rows and has_columns:
        raise invalid(
            f"JSON Value: {_debug(request)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    names = sorted(input_dtypes)
    if has_rows:
        rows = request["instances"]
        if not isinstance(rows, list):
            raise invalid(
                f"JSON Value: {_debug(request)} Expecting 'instances' to be an list/array"
            )
        if not rows:
            raise invalid(f"JSON Value: {_debug(request)} No values in 'instances' array")
        named = isinstance(rows[0], dict) and not _is_b64(rows[0])
        if not named and len(names) > 1:
            raise invalid(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        if named:
            for i, row in enumerate(rows):
                if not isinstance(row, dict) or _is_b64(row):
                    raise invalid(f"Expecting object but got list at item {i} of input list")
                if set(row) != set(names):
                    raise invalid(
                        f"Failed to process element: {i} of 'instances' list. JSON object: "
                        f"{_debug(row)} keys must be equal to: {','.join(names)}"
                    )
            columns = {k: [row[k] for row in rows] for k in names}
        else:
            columns = {names[0]: rows}
        return {k: json_to_array(v, input_dtypes[k]) for k, v in columns.items()}, True
    if has_columns:
        given = request["inputs"]
        if not isinstance(given, dict) or _is_b64(given):
            if len(names) > 1:
                raise invalid(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            given = {names[0]: given}
        for k in names:
            if k not in given:
                raise invalid(f"Missing named input: {k} in 'inputs' object.")
        return {k: json_to_array(given[k], input_dtypes[k]) for k in names}, False
    raise invalid("Missing 'inputs' or 'instances' key")


def rest_predict(models: Models, name, version, label, body: bytes) -> dict:
    """http_rest_api_handler.cc, ProcessPredictRequest."""
    if not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(f"JSON Parse error: {exc}") from None
    if not isinstance(request, dict):
        raise invalid(f"JSON Value: {_debug(request)} Is not object")
    signature = request.get("signature_name", "")
    if not isinstance(signature, str):
        raise invalid(
            f"JSON Value: {_debug(request)} not formatted correctly. 'signature_name' key "
            "must be a string value."
        )
    _, servable = models.resolve(name, version, label)
    key = signature or "serving_default"
    if key not in servable.signature_defs:  # GetInfoMap
        raise invalid(f'Serving signature name: "{key}" not found in signature def')
    dtypes = {
        k: tf.dtypes.as_dtype(v.dtype) for k, v in servable.signature_defs[key].inputs.items()
    }
    inputs, row_format = inputs_from_json(request, dtypes)
    outputs = models.predict(servable, signature, inputs)
    return rows_json(outputs) if row_format else columns_json(outputs)


def proto_json(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# http_rest_api_util.cc: kPredictionApiGegex and kModelStatusApiRegex, case-insensitive.
PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.I,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I
)


def rest_route(models: Models, method: str, path: str, body: bytes) -> dict:
    """HttpRestApiHandler::ProcessRequest: a path under /v1/ that neither regex matches is
    INVALID_ARGUMENT "Malformed request" (HTTP 400)."""
    pattern = PREDICT_PATH if method == "POST" else STATUS_PATH if method == "GET" else None
    match = pattern.fullmatch(path) if pattern else None
    if not match:
        raise invalid(f"Malformed request: {method} {path}")
    name, version, label, rest = match.groups()
    name = unquote(name or "")
    version = int(version) if version else None
    label = unquote(label) if label else None
    if method == "POST":
        if rest.lower() != "predict":
            raise invalid(f"the stand-in answers :predict only, not :{rest}")
        return rest_predict(models, name, version, label, body)
    if not name:
        raise invalid("Missing model name in request.")
    if rest:
        # http_rest_api_util.cc, ToJsonString(GetModelMetadataResponse): the model spec and
        # the SignatureDefMap printed apart, with proto field names and defaults.
        response = models.metadata(name, version, label, ["signature_def"])
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "model_spec": proto_json(response.model_spec),
            "metadata": {"signature_def": proto_json(signature_map)},
        }
    # get_model_status.proto names its JSON fields in snake case itself.
    return json_format.MessageToDict(
        models.status(name, version), always_print_fields_with_no_presence=True
    )


def make_rest_handler(models: Models):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one write: written apart, a keep-alive client's delayed
        # ACK holds the body back about 40 ms a request.
        wbufsize = 1 << 16

        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, status: HTTPStatus, raw: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            # http_server.cc: only paths matching (?i)/v1/.* reach the handler.
            if not re.fullmatch(r"/v1/.*", path, re.I):
                self._reply(HTTPStatus.NOT_FOUND, b"")
                return
            try:
                answer = rest_route(models, method, path, body)
                self._reply(HTTPStatus.OK, json.dumps(answer).encode())
            except RequestError as exc:
                self._reply(exc.http_status, json.dumps({"error": str(exc)}).encode())
            except Exception as exc:  # the stand-in answers, it never dies on a request
                error = json.dumps({"error": repr(exc)}).encode()
                self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, error)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


# --------------------------------------------------------------------------- gRPC


def _spec(spec) -> tuple[str, int | None, str | None]:
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else None
    return spec.name, version, label


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: Models):
        self.models = models

    def Predict(self, request, context):
        try:
            version, servable = self.models.resolve(*_spec(request.model_spec))
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.models.predict(servable, request.model_spec.signature_name, inputs)
        except RequestError as exc:
            context.abort(exc.code, str(exc))
        response = predict_pb2.PredictResponse()
        # predict_util.cc, MakeModelSpec: the signature name the request resolved to.
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        try:
            return self.models.metadata(*_spec(request.model_spec), list(request.metadata_field))
        except RequestError as exc:
            context.abort(exc.code, str(exc))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models: Models):
        self.models = models

    def GetModelStatus(self, request, context):
        name, version, _ = _spec(request.model_spec)  # a label alone lists every version
        try:
            return self.models.status(name, version)
        except RequestError as exc:
            context.abort(exc.code, str(exc))


# --------------------------------------------------------------------------- running it


class StandIn:
    """Both servers on 127.0.0.1, in threads; ``with StandIn(...) as s:`` stops them after.
    A REST port of 0 picks a free port here (the real server's 0 turns REST off: see
    ``from_flags``)."""

    def __init__(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        rest_port: int | None = 0,
        grpc_port: int = 0,
        batching=None,
        allow_version_labels_for_unavailable_models: bool = False,
        config_file: Path | None = None,
        poll_seconds: float = 0,
    ):
        self.models = Models(config, batching, allow_version_labels_for_unavailable_models)
        self.config_file, self.poll_seconds = config_file, poll_seconds
        self.stopping = threading.Event()
        self.http = None
        if rest_port is not None:
            self.http = ThreadingHTTPServer(
                ("127.0.0.1", rest_port), make_rest_handler(self.models)
            )
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
        if self.http:
            threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.grpc.start()
        if self.config_file and self.poll_seconds > 0:
            threading.Thread(target=self.poll_config, daemon=True).start()
        return self

    def poll_config(self) -> None:
        """server.cc, PollFilesystemAndReloadConfig: every --model_config_file_poll_wait_seconds
        the config file is read and applied; a file that does not parse, or a config that
        ReloadConfig refuses, is logged and the server keeps what it has."""
        while not self.stopping.wait(self.poll_seconds):
            try:
                text = Path(self.config_file).read_text()
                self.models.reload(
                    text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
                )
            except (OSError, text_format.ParseError, RequestError) as exc:
                print(f"stand-in: config reload failed: {exc}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.stopping.set()
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        self.grpc.stop(grace=None)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# The real server's flags that the stand-in acts on, with main.cc's defaults; a default's
# type is the flag's type. Other --name=value flags are taken and ignored.
FLAGS = {
    "port": 8500,
    "rest_api_port": 0,
    "model_name": "default",
    "model_base_path": "",
    "model_config_file": "",
    "monitoring_config_file": "",
    "file_system_poll_wait_seconds": 1,
    "enable_batching": False,
    "batching_parameters_file": "",
    "allow_version_labels_for_unavailable_models": False,
    "model_config_file_poll_wait_seconds": 0,
}


def parse_flags(argv: list[str]) -> tuple[dict, list[str]]:
    """TensorFlow's Flags::Parse (xla/tsl/util/command_line_flags.cc): only --name=value
    (and a bare --name for a bool) sets a flag; anything else is left over, and main.cc
    prints "unknown argument" for it and starts without it. A value that does not parse
    stops the server (-1)."""
    flags, unknown = dict(FLAGS), []
    for arg in argv:
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in FLAGS or (not eq and not isinstance(FLAGS[name], bool)):
            if not (arg.startswith("--") and eq):  # a real flag the stand-in ignores
                unknown.append(arg)
            continue
        default = FLAGS[name]
        if isinstance(default, bool):
            if not eq or value.lower() in ("true", "1"):
                flags[name] = True
            elif value.lower() in ("false", "0"):
                flags[name] = False
            else:
                raise SystemExit(f"Couldn't interpret value {value} for flag {name}.")
        elif isinstance(default, int):
            if not re.fullmatch(r"[+-]?\d+", value.strip()):
                raise SystemExit(f"Couldn't interpret value {value} for flag {name}.")
            flags[name] = int(value)
        else:
            flags[name] = value
    return flags, unknown


def from_flags(argv: list[str]) -> StandIn:
    """model_servers/main.cc and server.cc, Server::BuildAndStart: the stand-in the real
    server's command line describes, or StartupError where the real one would not start."""
    flags, unknown = parse_flags(argv)
    for arg in unknown:
        print(f"unknown argument: {arg}", flush=True)
    if not flags["model_base_path"] and not flags["model_config_file"]:
        raise StartupError(
            "INVALID_ARGUMENT: Both server_options.model_base_path and "
            "server_options.model_config_file are empty!"
        )
    if flags["model_config_file"]:
        config = parse_text_proto(
            flags["model_config_file"], model_server_config_pb2.ModelServerConfig()
        )
    else:
        config = single_model_config(flags["model_name"], flags["model_base_path"])
    batching = None
    if flags["enable_batching"]:
        batching = batching_parameters_type()()
        if flags["batching_parameters_file"]:
            parse_text_proto(flags["batching_parameters_file"], batching)
    elif flags["batching_parameters_file"]:
        raise StartupError(
            "INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if flags["monitoring_config_file"]:
        text = Path(flags["monitoring_config_file"]).read_text()
        if "prometheus_config" not in text:
            raise StartupError("the stand-in found no prometheus_config in the monitoring file")
    return StandIn(
        config,
        rest_port=flags["rest_api_port"] or None,
        grpc_port=flags["port"],
        batching=batching,
        allow_version_labels_for_unavailable_models=flags[
            "allow_version_labels_for_unavailable_models"
        ],
        config_file=flags["model_config_file"] or None,
        poll_seconds=flags["model_config_file_poll_wait_seconds"],
    )


def main(argv: list[str] | None = None) -> None:
    server = from_flags(sys.argv[1:] if argv is None else argv).start()
    rest = server.rest_url if server.http else "off"
    print(f"stand-in tensorflow_model_server: REST {rest}, gRPC {server.grpc_target}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
