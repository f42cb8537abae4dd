"""REST and gRPC clients for the exported model on TensorFlow Serving.

Each call has a deadline, checks its status, and turns every failure into a ServingError
with one line that says what went wrong.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import requests

from job.export import contract as c


class ServingError(Exception):
    """A failed request or an input that cannot be sent; the message is one line."""


# --------------------------------------------------------------------------- inputs


def check_pixels(pixels: np.ndarray, source: object) -> np.ndarray:
    """[28, 28] or [N, 28, 28] pixels in 0..255 -> uint8 [N, 28, 28]."""
    pixels = np.asarray(pixels)
    if pixels.shape == (c.IMAGE_SIZE, c.IMAGE_SIZE):
        pixels = pixels[np.newaxis]
    if pixels.ndim != 3 or pixels.shape[1:] != (c.IMAGE_SIZE, c.IMAGE_SIZE):
        raise ServingError(f"{source}: shape {pixels.shape}, expected (28, 28) or (N, 28, 28)")
    if pixels.dtype.kind not in "fiu":
        raise ServingError(f"{source}: dtype {pixels.dtype}, expected numbers 0..255")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ServingError(f"{source}: contains NaN or infinite values")
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise ServingError(f"{source}: values outside 0..255 (scaling happens in the model)")
    return np.rint(pixels).astype(np.uint8)


def read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ServingError(f"{path}: not a readable .npy array ({exc})") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        raise ServingError(f"{path}: an .npz archive; expected one .npy array")
    return check_pixels(array, path)


def _image_problems():
    """What Pillow raises for a file it cannot read: bad, truncated or oversized images."""
    import struct

    from PIL import Image

    return (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def read_image_bytes(path: Path) -> bytes:
    """The file's bytes, after checking that it is a whole PNG, JPEG, GIF or BMP image within
    the contract's size (the header is read first: a small file can claim a huge image)."""
    from PIL import Image

    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as image:
            kind, (width, height) = image.format, image.size
            if width * height > c.MAX_IMAGE_PIXELS:
                raise ServingError(
                    f"{path}: {width}x{height} pixels; the limit is {c.MAX_IMAGE_PIXELS}"
                )
            image.verify()
    except _image_problems() as exc:
        raise ServingError(f"{path}: not a readable PNG, JPEG, GIF or BMP image ({exc})") from None
    if kind not in ("PNG", "JPEG", "GIF", "BMP"):
        raise ServingError(f"{path}: {kind} images are not supported; use PNG or JPEG")
    return raw


def image_to_pixels(path: Path, invert: bool) -> np.ndarray:
    """Decode on the client (for --invert): grayscale, resized to 28x28, optionally inverted."""
    from PIL import Image

    raw = read_image_bytes(path)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            gray = image.convert("L").resize((c.IMAGE_SIZE, c.IMAGE_SIZE), Image.Resampling.LANCZOS)
            pixels = np.asarray(gray, dtype=np.uint8)
    except _image_problems() as exc:
        raise ServingError(f"{path}: cannot decode the image ({exc})") from None
    return 255 - pixels if invert else pixels


def parse_index_range(spec: str) -> slice:
    """'0:16' -> slice(0, 16); '7' -> slice(7, 8)."""
    try:
        if ":" in spec:
            start, stop = (int(part) for part in spec.split(":", 1))
        else:
            start = int(spec)
            stop = start + 1
    except ValueError:
        raise ServingError(f"--mnist-test {spec!r}: expected START:STOP or INDEX") from None
    if start < 0 or stop <= start:
        raise ServingError(f"--mnist-test {spec!r}: expected 0 <= START < STOP")
    return slice(start, stop)


def _choose_input(pixels: np.ndarray | None, image_bytes: list[bytes] | None):
    """Exactly one kind of input, within the batch limit -> (signature, input name, values)."""
    if (pixels is None) == (image_bytes is None):
        raise ServingError("give exactly one of pixels or image_bytes")
    if pixels is not None:
        check_batch(len(pixels))
        return c.SIGNATURE_PIXELS, c.INPUT_PIXELS, pixels
    check_batch(len(image_bytes))
    return c.SIGNATURE_IMAGE_BYTES, c.INPUT_IMAGE_BYTES, image_bytes


def check_batch(count: int) -> None:
    if count == 0:
        raise ServingError("nothing to send: give image files, .npy files or --mnist-test")
    if count > c.MAX_BATCH:
        raise ServingError(f"{count} inputs in one request; the limit is {c.MAX_BATCH}")


# --------------------------------------------------------------------------- REST


def _model_url(base_url: str, model: str, version: int | None) -> str:
    url = f"{base_url.rstrip('/')}/v1/models/{model}"
    return f"{url}/versions/{version}" if version is not None else url


def _rest_call(method: str, url: str, timeout: float, payload: dict | None = None) -> dict:
    try:
        response = requests.request(method, url, json=payload, timeout=timeout)
    except requests.exceptions.Timeout:
        raise ServingError(f"{url}: no answer within {timeout:g} s") from None
    except requests.exceptions.ConnectionError:
        raise ServingError(f"{url}: cannot connect (is the server running?)") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        detail = body.get("error") if isinstance(body, dict) else None
        raise ServingError(f"{url}: HTTP {response.status_code}: {detail or response.reason}")
    return body


def predict_rest(
    base_url: str,
    model: str = c.MODEL_NAME,
    *,
    pixels: np.ndarray | None = None,
    image_bytes: list[bytes] | None = None,
    version: int | None = None,
    timeout: float = 10.0,
) -> dict[str, np.ndarray]:
    """Classify uint8 pixels [N, 28, 28] or encoded images over REST (row format).

    Returns:
        {"probabilities": float32 [N, 10], "digit": int64 [N]}
    """
    signature, _, values = _choose_input(pixels, image_bytes)
    if pixels is not None:
        instances = values.tolist()
    else:
        instances = [{"b64": base64.b64encode(b).decode("ascii")} for b in values]
    payload = {"signature_name": signature, "instances": instances}
    body = _rest_call("POST", _model_url(base_url, model, version) + ":predict", timeout, payload)
    try:
        rows = body["predictions"]
        return {
            c.OUTPUT_PROBABILITIES: np.array([r[c.OUTPUT_PROBABILITIES] for r in rows], np.float32),
            c.OUTPUT_DIGIT: np.array([r[c.OUTPUT_DIGIT] for r in rows], np.int64),
        }
    except (KeyError, TypeError):
        raise ServingError(f"{base_url}: unexpected reply {str(body)[:200]}") from None


def model_status_rest(
    base_url: str, model: str = c.MODEL_NAME, version: int | None = None, timeout: float = 10.0
) -> dict:
    """GET /v1/models/<model>[/versions/<v>]: the versions and their states."""
    return _rest_call("GET", _model_url(base_url, model, version), timeout)


def model_metadata_rest(
    base_url: str, model: str = c.MODEL_NAME, version: int | None = None, timeout: float = 10.0
) -> dict:
    """GET .../metadata: the signatures, with their input and output names."""
    return _rest_call("GET", _model_url(base_url, model, version) + "/metadata", timeout)


# --------------------------------------------------------------------------- gRPC


def _grpc_stubs(hostport: str):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(hostport)
    return (
        channel,
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


def _grpc_call(hostport: str, method, request, timeout: float):
    import grpc

    try:
        return method.future(request, timeout).result()
    except grpc.RpcError as err:
        code = err.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise ServingError(f"{hostport}: no answer within {timeout:g} s") from None
        if code == grpc.StatusCode.UNAVAILABLE:
            raise ServingError(f"{hostport}: cannot connect (is the server running?)") from None
        raise ServingError(f"{hostport}: {code.name}: {err.details()}") from None


def _model_spec(model: str, version: int | None, signature: str | None = None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=model)
    if signature:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    return spec


def predict_grpc(
    hostport: str,
    model: str = c.MODEL_NAME,
    *,
    pixels: np.ndarray | None = None,
    image_bytes: list[bytes] | None = None,
    version: int | None = None,
    timeout: float = 10.0,
) -> dict[str, np.ndarray]:
    """Classify over gRPC with PredictionService.Predict; same inputs and outputs as REST."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    signature, name, values = _choose_input(pixels, image_bytes)
    tensor = values if pixels is not None else np.array(values, dtype=object)
    request = predict_pb2.PredictRequest(model_spec=_model_spec(model, version, signature))
    request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
    channel, predict_stub, _ = _grpc_stubs(hostport)
    with channel:
        response = _grpc_call(hostport, predict_stub.Predict, request, timeout)
    try:
        return {
            key: tf.make_ndarray(response.outputs[key])
            for key in (c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT)
        }
    except (KeyError, ValueError):
        raise ServingError(
            f"{hostport}: reply lacks outputs {c.OUTPUT_PROBABILITIES}, {c.OUTPUT_DIGIT}"
        ) from None


def model_status_grpc(
    hostport: str, model: str = c.MODEL_NAME, version: int | None = None, timeout: float = 10.0
) -> dict:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(model, version))
    channel, _, model_stub = _grpc_stubs(hostport)
    with channel:
        response = _grpc_call(hostport, model_stub.GetModelStatus, request, timeout)
    return json_format.MessageToDict(response, preserving_proto_field_name=True)


def model_metadata_grpc(
    hostport: str, model: str = c.MODEL_NAME, version: int | None = None, timeout: float = 10.0
) -> dict:
    """GetModelMetadata with the signature_def field; returns the SignatureDefMap as a dict."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=_model_spec(model, version), metadata_field=["signature_def"]
    )
    channel, predict_stub, _ = _grpc_stubs(hostport)
    with channel:
        response = _grpc_call(hostport, predict_stub.GetModelMetadata, request, timeout)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return {
        "model_spec": json_format.MessageToDict(response.model_spec),
        "metadata": {"signature_def": json_format.MessageToDict(signatures)},
    }
