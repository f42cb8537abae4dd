"""Staged rollouts with TF Serving's version labels (stable, canary, previous), by rewriting the
model config file the server polls (model_servers/main.cc); why each step: docs/serving.md."""

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2  # plain protos: no TensorFlow

from serving import ServingError

STABLE, CANARY, PREVIOUS = "stable", "canary", "previous"


def read_config(path: Path, model: str):
    """The ModelServerConfig in ``path`` and its entry for ``model``."""
    try:
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except OSError as exc:
        raise ServingError(f"{path}: cannot read ({exc.strerror})") from None
    except text_format.ParseError as exc:
        raise ServingError(f"{path}: not a ModelServerConfig ({exc})") from None
    for entry in config.model_config_list.config:
        if entry.name == model:
            return config, entry
    raise ServingError(f"{path}: no model named {model!r}")


def write_atomic(path: Path, text: str) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would lock out a server of another user
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ServingError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def start_config(path: Path, model: str, base_path: str, version: int) -> None:
    """A first config with ``version`` as stable; the server needs
    --allow_version_labels_for_unavailable_models, as labels come before versions load."""
    # server_core.cc ValidateModelConfigList (UriIsRelativePath, tsl io::ParseURI): every base
    # path is an absolute path or a URI such as s3://bucket/mnist.
    if not re.match(r"/|[A-Za-z][0-9A-Za-z.]*://", base_path):
        raise ServingError(
            f"--base-path {base_path!r}: TF Serving takes an absolute path (as the server sees "
            "it, e.g. /models/mnist) or a URI"
        )
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name=model, base_path=base_path, model_platform="tensorflow"
    )
    entry.model_version_policy.specific.versions.append(version)
    entry.version_labels[STABLE] = version
    write_atomic(path, text_format.MessageToString(config))


def serve(path: Path, model: str, labels: dict[str, int], extra: int | None = None) -> None:
    """Rewrite ``path`` to serve exactly the labelled versions (and ``extra``)."""
    config, entry = read_config(path, model)
    entry.model_version_policy.specific.ClearField("versions")
    entry.model_version_policy.specific.versions.extend(
        sorted(set(labels.values()) | ({extra} if extra else set()))
    )
    entry.ClearField("version_labels")
    entry.version_labels.update(labels)
    write_atomic(path, text_format.MessageToString(config))


@contextlib.contextmanager
def restored_on_failure(path: Path):
    """The config file is put back as it was (atomically) when the step fails."""
    try:
        before = path.read_text()
    except OSError as exc:
        raise ServingError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        yield
    except BaseException:
        write_atomic(path, before)
        raise


def labels_of(path: Path, model: str, needed: str) -> dict[str, int]:
    labels = dict(read_config(path, model)[1].version_labels)
    if needed not in labels:
        raise ServingError(f"{path}: no {needed!r} label for {model}")
    return labels


def loaded(entry: dict) -> bool:
    """True once AVAILABLE; ServingError when the load failed (END with an error:
    get_model_status_impl.cc). START, LOADING or an END left from an unload mean not yet."""
    error = entry.get("status", {})
    if entry["state"] == "END" and error.get("error_code", "OK") != "OK":
        raise ServingError(
            f"version {entry['version']} failed to load: {error['error_code']}: "
            f"{error.get('error_message', '')}",
            "FAILED",
        )
    return entry["state"] == "AVAILABLE"


def wait_for(served_version, wanted: int, what: str, deadline_s: float) -> None:
    """Poll ``served_version()`` until it answers ``wanted``; a ServingError "FAILED" stops it."""
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        try:
            got = served_version()
            if got == wanted:
                return
            last = f"version {got}"
        except ServingError as exc:
            if exc.code == "FAILED":
                raise
            last = str(exc)
        if time.monotonic() > deadline:
            raise ServingError(f"{what} is not version {wanted} after {deadline_s:g} s ({last})")
        time.sleep(0.5)
