"""Commands that ask a served model: predict, status, metadata, verify, card."""

from __future__ import annotations

import json
from pathlib import Path

import click

from job.cli.options import cache_dir_option, run_option
from job.export import contract as c
from serving.cli import (
    main,
    one_line_errors,
    pick_server,
    server_options,
    version_choice,
)
from serving.client import ServingError


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

    calls = (client.model_status_rest, client.model_status_grpc)
    print_answer(rest, grpc_target, calls, model, version_choice(model_version, label), timeout)


@main.command()
@server_options
@one_line_errors
def metadata(rest, grpc_target, model, model_version, label, timeout):
    """Signatures with their inputs and outputs (REST .../metadata, gRPC GetModelMetadata)."""
    from serving import client

    calls = (client.model_metadata_rest, client.model_metadata_grpc)
    print_answer(rest, grpc_target, calls, model, version_choice(model_version, label), timeout)


def print_answer(rest, grpc_target, calls, model, version, timeout) -> None:
    """Ask the server given with the (REST, gRPC) call pair and print its answer as JSON."""
    call, target = pick_server(rest, grpc_target, *calls)
    click.echo(json.dumps(call(target, model, version, timeout), indent=2))


@main.command()
@server_options
@run_option("The finished run whose model is served (its metrics.json).")
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
@click.argument("export", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The card's facts as JSON.")
@one_line_errors
def card(export, as_json):
    """Print the model card of an export: a version folder (models/mnist/3), or a model base
    path (models/mnist: its newest version)."""
    from job.export.model_card import read_card
    from job.export.versions import existing_versions

    versions = existing_versions(export)
    folder = export / str(versions[-1]) if versions else export
    try:
        click.echo(read_card(folder, as_json), nl=False)
    except FileNotFoundError as exc:
        raise ServingError(f"{folder}: no model card ({Path(exc.filename).name} missing)") from None
    except (OSError, ValueError) as exc:
        raise ServingError(f"{folder}: cannot read the model card ({exc})") from None
