"""Commands that operate a deployment: load, rollout."""

from __future__ import annotations

import json
from pathlib import Path

import click

from job.cli.options import cache_dir_option, option_group, run_option
from job.export import contract as c
from serving.cli import (
    MAX_LOAD_SECONDS,
    grpc_option,
    main,
    model_option,
    one_line_errors,
    pick_server,
    rest_option,
    server_options,
    timeout_option,
    version_choice,
)
from serving.cli.query import check_deployment, load_mnist_test


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
@run_option("The run that made the canary (its metrics.json).")
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
