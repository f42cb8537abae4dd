"""REST and gRPC clients for the exported model: each call has a deadline, checks its status,
and turns every failure into a one-line ServingError. grpc and the tensorflow_serving stubs
(which load TensorFlow) are imported inside the gRPC calls: REST commands stay light."""

import base64
import contextlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import requests
from google.protobuf import json_format

from job.export import contract as c
from serving import ServingError
from serving.inputs import check_pixels


def _choose_input(pixels, image_bytes, signature: str | None):
    """-> (signature, input name, values in the signature's dtype: the server casts nothing)."""
    if (pixels is None) == (image_bytes is None):
        raise ServingError("give exactly one of pixels or image_bytes")
    if pixels is not None:
        pixels = check_pixels(pixels, "pixels")
        check_batch(len(pixels))
        if signature == c.SIGNATURE_PIXELS_FLOAT:
            return signature, c.INPUT_PIXELS, pixels.astype(np.float32)
        return c.SIGNATURE_PIXELS, c.INPUT_PIXELS, pixels
    if isinstance(image_bytes, bytes | str) or not all(isinstance(b, bytes) for b in image_bytes):
        raise ServingError("image_bytes: expected a list of encoded images as bytes")
    check_batch(len(image_bytes))
    return c.SIGNATURE_IMAGE_BYTES, c.INPUT_IMAGE_BYTES, image_bytes


def check_batch(count: int) -> None:
    if count == 0:
        raise ServingError("nothing to send: give image files, .npy files or --mnist-test")
    if count > c.MAX_BATCH:
        raise ServingError(f"{count} inputs in one request; the limit is {c.MAX_BATCH}")


def rest_address(text: str) -> str:
    """A REST base URL: ``host:port`` means ``http://host:port``; http(s) only."""
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        parts = None
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServingError(f"{text!r}: expected a REST address such as http://localhost:8501")
    return url.rstrip("/")


def grpc_address(text: str) -> str:
    """A gRPC target HOST:PORT; a URL is refused (gRPC speaks no http://)."""
    if "://" in text:
        hostport = text.split("://", 1)[1].rstrip("/")
        raise ServingError(f"{text!r}: a gRPC target takes no scheme; write {hostport}")
    if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}", text):
        raise ServingError(f"{text!r}: expected a gRPC target HOST:PORT such as localhost:8500")
    return text


# As in TF Serving's ModelSpec: a number, a label ("stable", "canary"), or None for the newest.
Version = int | str | None


def _model_url(base_url: str, model: str, version: Version) -> str:
    url = f"{base_url.rstrip('/')}/v1/models/{model}"
    if isinstance(version, str):
        return f"{url}/labels/{version}"
    return f"{url}/versions/{version}" if version is not None else url


def one_line(message: str) -> str:
    """A server's error message on one line (TensorFlow's span several), at most 400 characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= 400 else text[:397] + "..."


def proto_dict(message) -> dict:
    """A proto as TF Serving's REST API writes it: proto field names, defaults included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


NO_SERVER = "cannot connect (is the server running?)"


def _rest_call(method: str, url: str, timeout: float, payload=None, session=None) -> dict:
    try:
        response = (session or requests).request(method, url, json=payload, timeout=timeout)
    except requests.exceptions.Timeout:
        raise ServingError(f"{url}: no answer within {timeout:g} s", "DEADLINE_EXCEEDED") from None
    except requests.exceptions.ConnectionError:
        raise ServingError(f"{url}: {NO_SERVER}", "UNAVAILABLE") from None
    except requests.exceptions.RequestException as exc:  # a URL requests cannot use
        raise ServingError(f"{url}: {one_line(exc)}", "UNAVAILABLE") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        detail = body.get("error") if isinstance(body, dict) else None
        raise ServingError(
            f"{url}: HTTP {response.status_code}: {one_line(detail or response.reason)}",
            f"HTTP {response.status_code}",
        )
    return body


def predict_rest(
    base_url: str,
    model: str = c.MODEL_NAME,
    *,
    pixels: np.ndarray | None = None,
    image_bytes: list[bytes] | None = None,
    version: Version = None,
    timeout: float = 10.0,
    signature: str | None = None,
    session: requests.Session | None = None,
) -> dict[str, np.ndarray]:
    """Classify pixels [N, 28, 28] or encoded images over REST (row format) -> {"probabilities":
    float32 [N, 10], "digit": int64 [N]}. ``session`` reuses connections (a load test)."""
    signature, _, values = _choose_input(pixels, image_bytes, signature)
    if pixels is not None:
        instances = values.tolist()
    else:
        instances = [{"b64": base64.b64encode(b).decode("ascii")} for b in values]
    payload = {"signature_name": signature, "instances": instances}
    url = _model_url(base_url, model, version) + ":predict"
    body = _rest_call("POST", url, timeout, payload, session)
    try:
        rows = body["predictions"]
        return {
            c.OUTPUT_PROBABILITIES: np.array([r[c.OUTPUT_PROBABILITIES] for r in rows], np.float32),
            c.OUTPUT_DIGIT: np.array([r[c.OUTPUT_DIGIT] for r in rows], np.int64),
        }
    except (KeyError, TypeError):
        raise ServingError(f"{base_url}: unexpected reply {str(body)[:200]}") from None


def _grpc_call(hostport: str, method: str, request, timeout: float, channel=None):
    """PredictionService.``method`` on ``channel``, or on a channel of its own, closed after."""
    # Deferred: the stubs import TensorFlow, and REST commands stay light.
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    service = prediction_service_pb2_grpc.PredictionServiceStub
    if method == "GetModelStatus":  # the one method of ModelService that a client asks
        service = model_service_pb2_grpc.ModelServiceStub
    own = grpc.insecure_channel(hostport) if channel is None else contextlib.nullcontext(channel)
    with own as open_channel:
        try:
            return getattr(service(open_channel), method).future(request, timeout).result()
        except grpc.RpcError as err:
            code = err.code().name
            message = {
                "DEADLINE_EXCEEDED": f"no answer within {timeout:g} s",
                "UNAVAILABLE": NO_SERVER,
            }.get(code, f"{code}: {one_line(err.details())}")
            raise ServingError(f"{hostport}: {message}", code) from None


def _model_spec(model: str, version: Version, signature: str | None = None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=model)
    if signature:
        spec.signature_name = signature
    if isinstance(version, str):
        spec.version_label = version
    elif version is not None:
        spec.version.value = version
    return spec


def predict_grpc(
    hostport: str,
    model: str = c.MODEL_NAME,
    *,
    pixels: np.ndarray | None = None,
    image_bytes: list[bytes] | None = None,
    version: Version = None,
    timeout: float = 10.0,
    signature: str | None = None,
    channel=None,
) -> dict[str, np.ndarray]:
    """predict_rest over gRPC, plus "version": the one that answered; ``channel`` is reused."""
    import tensorflow as tf  # deferred: gRPC tensors need it, REST does not
    from tensorflow_serving.apis import predict_pb2

    signature, name, values = _choose_input(pixels, image_bytes, signature)
    tensor = values if pixels is not None else np.array(values, dtype=object)
    request = predict_pb2.PredictRequest(model_spec=_model_spec(model, version, signature))
    request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
    response = _grpc_call(hostport, "Predict", request, timeout, channel)
    try:
        outputs = {
            k: tf.make_ndarray(response.outputs[k])
            for k in (c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT)
        }
        return {**outputs, "version": response.model_spec.version.value}
    except (KeyError, ValueError):
        raise ServingError(
            f"{hostport}: reply lacks outputs {c.OUTPUT_PROBABILITIES}, {c.OUTPUT_DIGIT}"
        ) from None


@dataclass(frozen=True)
class Server:
    """A server at a REST base URL or a gRPC HOST:PORT; status and metadata come back in the REST
    reply's shape for both (http_rest_api_util.cc: proto field names, defaults printed)."""

    target: str
    rest: bool
    timeout: float = 10.0

    def predict(self, model: str, **kwargs) -> dict:
        call = predict_rest if self.rest else predict_grpc
        return call(self.target, model, timeout=self.timeout, **kwargs)

    def status(self, model: str, version: Version = None) -> dict:
        """REST GET /v1/models/<model>..., gRPC GetModelStatus: the versions and states."""
        if self.rest:
            return _rest_call("GET", _model_url(self.target, model, version), self.timeout)
        from tensorflow_serving.apis import get_model_status_pb2

        spec = _model_spec(model, version)
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        return proto_dict(_grpc_call(self.target, "GetModelStatus", request, self.timeout))

    def metadata(self, model: str, version: Version = None) -> dict:
        """REST GET .../metadata, gRPC GetModelMetadata: the signatures and the version."""
        if self.rest:
            url = _model_url(self.target, model, version) + "/metadata"
            return _rest_call("GET", url, self.timeout)
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(model, version), metadata_field=["signature_def"]
        )
        response = _grpc_call(self.target, "GetModelMetadata", request, self.timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {
            "model_spec": proto_dict(response.model_spec),
            "metadata": {"signature_def": proto_dict(signatures)},
        }

    def version_of(self, model: str, version: Version = None) -> int:
        """The version number that answers for ``version`` (a label, or None: the newest)."""
        return int(self.metadata(model, version)["model_spec"]["version"])
