"""python -m serving: query a TensorFlow Serving model over REST or gRPC."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from job.cli.options import cache_dir_option, option_group
from job.export import contract as c
from serving.client import ServingError

EXIT_REQUEST_FAILED = 1
EXIT_BAD_INPUT = 2
MAX_LOAD_SECONDS = 3600  # serving load stops by itself, whatever it is given


def one_line_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ServingError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_REQUEST_FAILED)

    return wrapper


rest_option = click.option(
    "--rest", metavar="URL", help="REST base URL, e.g. http://localhost:8501"
)
grpc_option = click.option(
    "--grpc", "grpc_target", metavar="HOST:PORT", help="gRPC address, e.g. localhost:8500"
)
model_option = click.option("--model", default=c.MODEL_NAME, show_default=True, help="Model name.")
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds before a request is given up.",
)
server_options = option_group(
    rest_option,
    grpc_option,
    model_option,
    click.option(
        "--version",
        "model_version",
        type=click.IntRange(min=1),
        help="Model version.  [default: the newest the server has]",
    ),
    click.option(
        "--label", help="Version label instead of a number, e.g. stable or canary (version_labels)."
    ),
    timeout_option,
)


def version_choice(model_version: int | None, label: str | None):
    """--version or --label, as the clients take it (a number or a label)."""
    if model_version is not None and label:
        raise click.UsageError("give --version or --label, not both")
    return label or model_version


def pick_server(rest: str | None, grpc_target: str | None, rest_call, grpc_call):
    """The client function for the protocol given, and its target."""
    if bool(rest) == bool(grpc_target):
        raise click.UsageError("give exactly one of --rest URL or --grpc HOST:PORT")
    return (rest_call, rest) if rest else (grpc_call, grpc_target)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Query the MNIST model on TensorFlow Serving (REST or gRPC)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@main.command()
@server_options
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--mnist-test",
    "mnist_range",
    metavar="START:STOP",
    help="Send MNIST test images by index (needs the data cache: make data).",
)
@cache_dir_option
@click.option(
    "--invert",
    is_flag=True,
    help="Images are dark digits on light paper: decode here and invert (MNIST is light on dark).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@one_line_errors
def predict(
    rest,
    grpc_target,
    model,
    model_version,
    label,
    timeout,
    files,
    mnist_range,
    cache_dir,
    invert,
    as_json,
):
    """Classify image files (PNG/JPEG, any size: resized to 28x28 in the model), .npy pixel
    arrays ([28, 28] or [N, 28, 28], 0..255) and/or MNIST test images."""
    import numpy as np

    from serving import client, inputs

    call, target = pick_server(rest, grpc_target, client.predict_rest, client.predict_grpc)
    version = version_choice(model_version, label)
    names, truths, pixel_sets, encoded = [], [], [], []
    for path in files:
        if not path.exists():
            raise ServingError(f"{path}: no such file")
        if path.suffix.lower() == ".npy":
            pixels = inputs.read_npy(path)
            pixel_sets.append(pixels)
            names += [f"{path.name}[{i}]" for i in range(len(pixels))]
            truths += [None] * len(pixels)
        elif invert:
            pixel_sets.append(inputs.image_to_pixels(path, invert=True)[np.newaxis])
            names.append(path.name)
            truths.append(None)
        else:
            encoded.append((path.name, inputs.read_image_bytes(path)))
    if mnist_range:
        indices = inputs.parse_index_range(mnist_range)
        images, labels = load_mnist_test(cache_dir, indices)
        pixel_sets.append(images)
        names += [f"mnist-test[{indices.start + i}]" for i in range(len(labels))]
        truths += [int(label) for label in labels]
    # Encoded images go to the image signature, pixels to serving_default; rows keep their order.
    encoded_names = [name for name, _ in encoded]
    names = encoded_names + names
    truths = [None] * len(encoded) + truths
    client.check_batch(len(names))
    batches = []
    if encoded:
        batches.append({"image_bytes": [raw for _, raw in encoded]})
    if pixel_sets:
        batches.append({"pixels": np.concatenate(pixel_sets)})
    results = [call(target, model, version=version, timeout=timeout, **batch) for batch in batches]
    probabilities = np.concatenate([r[c.OUTPUT_PROBABILITIES] for r in results])
    digits = np.concatenate([r[c.OUTPUT_DIGIT] for r in results])
    rows = [
        {"input": name, "digit": int(digit), "confidence": float(prob.max()), "true": truth}
        for name, digit, prob, truth in zip(names, digits, probabilities, truths, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'input':<28} {'digit':>5} {'confidence':>10} {'true':>5}")
    for row in rows:
        true = "" if row["true"] is None else str(row["true"])
        click.echo(f"{row['input']:<28} {row['digit']:>5} {row['confidence']:>10.4f} {true:>5}")


def load_mnist_test(cache_dir: Path, indices: slice = slice(None)):
    """MNIST test images from the job's verified cache (no network)."""
    from job.data import load_mnist
    from job.errors import JobError

    try:
        arrays = load_mnist(None, cache_dir, allow_network=False).arrays
    except JobError:
        raise ServingError(
            f"no verified MNIST in {cache_dir}: fill it with `python -m job data "
            "--cache-dir DIR` (or make data), or pass --cache-dir"
        ) from None
    if indices.stop is not None and indices.stop > len(arrays.x_test):
        raise ServingError(f"--mnist-test: the test set has {len(arrays.x_test)} images")
    return arrays.x_test[indices], arrays.y_test[indices]


@main.command()
@server_options
@one_line_errors
def status(rest, grpc_target, model, model_version, label, timeout):
    """Model version status (REST GET /v1/models/<model>, gRPC GetModelStatus)."""
    from serving import client

    call, target = pick_server(
        rest, grpc_target, client.model_status_rest, client.model_status_grpc
    )
    version = version_choice(model_version, label)
    click.echo(json.dumps(call(target, model, version, timeout), indent=2))


@main.command()
@server_options
@one_line_errors
def metadata(rest, grpc_target, model, model_version, label, timeout):
    """Signatures with their inputs and outputs (REST .../metadata, gRPC GetModelMetadata)."""
    from serving import client

    call, target = pick_server(
        rest, grpc_target, client.model_metadata_rest, client.model_metadata_grpc
    )
    version = version_choice(model_version, label)
    click.echo(json.dumps(call(target, model, version, timeout), indent=2))


@main.command()
@server_options
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="The finished run whose model is served (its metrics.json).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, c.MAX_BATCH),
    default=256,
    show_default=True,
    help="Images per request.",
)
@cache_dir_option
@one_line_errors
def verify(rest, grpc_target, model, model_version, label, timeout, run_dir, batch_size, cache_dir):
    """Post-deploy check: the served model's signatures and its accuracy on the whole MNIST
    test set against the run's report. Exit 0 only when they agree."""
    version = version_choice(model_version, label)
    click.echo(
        check_deployment(rest, grpc_target, model, version, timeout, run_dir, batch_size, cache_dir)
    )


def check_deployment(rest, grpc_target, model, version, timeout, run_dir, batch_size, cache_dir):
    """serving verify's check -> its one-line summary; ServingError when they disagree."""
    from job.errors import JobError
    from job.report import read_report
    from serving import client
    from serving.verify import verify as check

    try:
        reported = read_report(run_dir)["test"]["accuracy"]
    except JobError as exc:
        raise ServingError(str(exc)) from None
    call, target = pick_server(rest, grpc_target, client.predict_rest, client.predict_grpc)
    meta_call, _ = pick_server(
        rest, grpc_target, client.model_metadata_rest, client.model_metadata_grpc
    )
    images, labels = load_mnist_test(cache_dir)
    result = check(
        lambda pixels: call(target, model, version=version, timeout=timeout, pixels=pixels),
        meta_call(target, model, version, timeout),
        images,
        labels,
        reported,
        batch_size,
    )
    if not result.agrees:
        raise ServingError(f"{target}: {result.summary()} ({run_dir})")
    return result.summary()


@main.command()
@server_options
@click.option("--requests", "max_requests", type=click.IntRange(min=1), help="Requests to send.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True, max=MAX_LOAD_SECONDS),
    help=f"Seconds to send for.  [default: until --requests are sent, at most {MAX_LOAD_SECONDS}]",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
    help="Requests in flight at once.",
)  # fmt: skip
@click.option(
    "--signature",
    type=click.Choice([c.SIGNATURE_PIXELS, c.SIGNATURE_PIXELS_FLOAT, c.SIGNATURE_IMAGE_BYTES]),
    default=c.SIGNATURE_PIXELS,
    show_default=True,
    help="The signature to load (pixels as uint8 or float32, or PNG bytes).",
)
@click.option(
    "--batch-size", type=click.IntRange(1, c.MAX_BATCH), default=1, show_default=True,
    help="Images per request.",
)  # fmt: skip
@click.option(
    "--format", "output_format", type=click.Choice(["table", "json"]), default="table",
    show_default=True, help="json: one object for programs.",
)  # fmt: skip
@cache_dir_option
@one_line_errors
def load(
    rest,
    grpc_target,
    model,
    model_version,
    label,
    timeout,
    max_requests,
    duration,
    concurrency,
    signature,
    batch_size,
    output_format,
    cache_dir,
):
    """Load test: send MNIST test images from --concurrency workers until --requests are
    sent or --duration has passed (one of them is needed), then print throughput, latency
    percentiles and errors by code. Only the address given is sent to; --timeout is each
    request's deadline."""
    from serving import client
    from serving.load import run_load

    if max_requests is None and duration is None:
        raise click.UsageError("give --requests N, --duration SECONDS, or both")
    call, target = pick_server(rest, grpc_target, client.predict_rest, client.predict_grpc)
    version = version_choice(model_version, label)
    images, _ = load_mnist_test(cache_dir)
    pngs = encode_pngs(images[:256]) if signature == c.SIGNATURE_IMAGE_BYTES else None

    def make_sender():
        import grpc
        import numpy as np
        import requests

        if rest:
            reuse = {"session": requests.Session()}
        else:
            import tensorflow  # noqa: F401  the gRPC client's tensors: imported before the clock

            reuse = {"channel": grpc.insecure_channel(target)}

        def send(i: int) -> None:
            rows = range(i * batch_size, (i + 1) * batch_size)
            given = (
                {"image_bytes": [pngs[r % len(pngs)] for r in rows]}
                if pngs
                else {"pixels": np.take(images, rows, axis=0, mode="wrap")}
            )
            call(target, model, version=version, timeout=timeout, signature=signature,
                 **given, **reuse)  # fmt: skip

        return send

    def progress(so_far) -> None:
        rate = len(so_far.latencies) / so_far.seconds if so_far.seconds else 0.0
        errors = sum(so_far.errors.values())
        click.echo(
            f"\r{so_far.requests} requests, {errors} errors, {rate:.0f}/s ", nl=False, err=True
        )

    result = run_load(
        make_sender, batch_size, concurrency, max_requests, duration or MAX_LOAD_SECONDS, progress
    )
    click.echo("", err=True)
    if output_format == "json":
        click.echo(json.dumps({"target": target, "signature": signature, **result.summary()}))
    else:
        click.echo(f"{target} {signature}\n{result.table()}")


def encode_pngs(images) -> list[bytes]:
    import io

    from PIL import Image

    encoded = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


@main.group()
def rollout() -> None:
    """Staged rollouts with version labels: start, canary, promote, rollback.

    Each step rewrites the model config file the server polls
    (--model_config_file_poll_wait_seconds) and waits until the server serves it."""


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The model config file the server reads (--model_config_file).",
)
wait_option = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Seconds to wait for the server to serve each change.",
)
rollout_options = option_group(
    config_option, rest_option, grpc_option, model_option, timeout_option, wait_option
)


def served_label(rest, grpc_target, model, label, timeout):
    """A function that asks the server which version ``label`` names now."""
    from serving import client

    call, target = pick_server(
        rest, grpc_target, client.model_metadata_rest, client.model_metadata_grpc
    )
    return lambda: int(call(target, model, label, timeout)["model_spec"]["version"])


@rollout.command("start")
@config_option
@model_option
@click.option(
    "--base-path",
    default=f"/models/{c.MODEL_NAME}",
    show_default=True,
    help="The model base path as the server sees it.",
)
@click.argument("version", type=click.IntRange(min=1))
@one_line_errors
def rollout_start(config_path, model, base_path, version):
    """Write a first config that serves VERSION as stable (before starting the server)."""
    from serving import rollout as r

    r.start_config(config_path, model, base_path, version)
    click.echo(f"{config_path}: {model} version {version} is {r.STABLE}")


@rollout.command("canary")
@rollout_options
@click.argument("version", type=click.IntRange(min=1))
@one_line_errors
def rollout_canary(config_path, rest, grpc_target, model, timeout, wait, version):
    """Load VERSION (an export that passed the quality gate) beside stable, then label it
    canary once the server has it."""
    from serving import client
    from serving import rollout as r

    labels = r.labels_of(config_path, model, r.STABLE)
    status, target = pick_server(
        rest, grpc_target, client.model_status_rest, client.model_status_grpc
    )
    r.serve(config_path, model, labels, extra=version)

    def available():
        (entry,) = status(target, model, version, timeout)["model_version_status"]
        return version if entry["state"] == "AVAILABLE" else None

    r.wait_for(available, version, f"{model} version {version}", wait)
    r.serve(config_path, model, {**labels, r.CANARY: version})
    canary = served_label(rest, grpc_target, model, r.CANARY, timeout)
    r.wait_for(canary, version, f"label {r.CANARY}", wait)
    click.echo(f"{target}: {model} version {version} is {r.CANARY}")


@rollout.command("promote")
@rollout_options
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="The run that made the canary (its metrics.json).",
)
@cache_dir_option
@one_line_errors
def rollout_promote(config_path, rest, grpc_target, model, timeout, wait, run_dir, cache_dir):
    """Make canary stable once serving verify --label canary agrees with its run's report;
    the old stable becomes previous."""
    from serving import rollout as r

    labels = r.labels_of(config_path, model, r.CANARY)
    summary = check_deployment(rest, grpc_target, model, r.CANARY, timeout, run_dir, 256, cache_dir)
    new = {r.STABLE: labels[r.CANARY], r.CANARY: labels[r.CANARY]}
    if labels.get(r.STABLE, new[r.STABLE]) != new[r.STABLE]:
        new[r.PREVIOUS] = labels[r.STABLE]
    r.serve(config_path, model, new)
    stable = served_label(rest, grpc_target, model, r.STABLE, timeout)
    r.wait_for(stable, new[r.STABLE], f"label {r.STABLE}", wait)
    click.echo(f"{model} version {new[r.STABLE]} is {r.STABLE}: {summary}")


@rollout.command("rollback")
@rollout_options
@one_line_errors
def rollout_rollback(config_path, rest, grpc_target, model, timeout, wait):
    """Put the previous stable back as stable and unload the version it replaced."""
    from serving import rollout as r

    labels = r.labels_of(config_path, model, r.PREVIOUS)
    r.serve(config_path, model, {r.STABLE: labels[r.PREVIOUS]})
    stable = served_label(rest, grpc_target, model, r.STABLE, timeout)
    r.wait_for(stable, labels[r.PREVIOUS], f"label {r.STABLE}", wait)
    click.echo(f"{model} version {labels[r.PREVIOUS]} is {r.STABLE} again")
