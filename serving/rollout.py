"""Staged rollouts with TF Serving's version labels: `stable` takes the traffic, `canary` is
tried, `previous` stays loaded for a rollback.

The server reads its model config file again every --model_config_file_poll_wait_seconds.
Each step rewrites that file atomically (a polling server never reads half of it) and waits
until the server serves what it says. A label may only move to a version the server has
loaded (model_servers/server_core.cc), so a new version is first added, then labelled once
it is AVAILABLE.
"""

from __future__ import annotations

import time
from pathlib import Path

from serving.client import ServingError

STABLE, CANARY, PREVIOUS = "stable", "canary", "previous"


def read_config(path: Path, model: str):
    """The ModelServerConfig in ``path`` and its entry for ``model``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

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


def write_config(path: Path, config) -> None:
    from google.protobuf import text_format

    from job.errors import OutputError
    from job.files import write_atomic

    text = text_format.MessageToString(config)
    try:
        write_atomic(path, lambda f: f.write(text.encode()))
    except OutputError as exc:
        raise ServingError(str(exc)) from None


def start_config(path: Path, model: str, base_path: str, version: int) -> None:
    """A first config with ``version`` as stable. The server must start with
    --allow_version_labels_for_unavailable_models: it sets labels before versions load."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name=model, base_path=base_path, model_platform="tensorflow"
    )
    entry.model_version_policy.specific.versions.append(version)
    entry.version_labels[STABLE] = version
    write_config(path, config)


def serve(path: Path, model: str, labels: dict[str, int], extra: int | None = None) -> None:
    """Rewrite ``path`` to serve exactly the labelled versions (and ``extra``), with
    model_version_policy { specific } and these version_labels."""
    config, entry = read_config(path, model)
    entry.model_version_policy.specific.ClearField("versions")
    entry.model_version_policy.specific.versions.extend(
        sorted(set(labels.values()) | ({extra} if extra else set()))
    )
    entry.ClearField("version_labels")
    entry.version_labels.update(labels)
    write_config(path, config)


def labels_of(path: Path, model: str, needed: str) -> dict[str, int]:
    labels = dict(read_config(path, model)[1].version_labels)
    if needed not in labels:
        raise ServingError(f"{path}: no {needed!r} label for {model}")
    return labels


def wait_for(served_version, wanted: int, what: str, deadline_s: float) -> None:
    """Poll ``served_version()`` until it answers ``wanted``, or fail in one line."""
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        try:
            got = served_version()
            if got == wanted:
                return
            last = f"version {got}"
        except ServingError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise ServingError(f"{what} is not version {wanted} after {deadline_s:g} s ({last})")
        time.sleep(0.5)
