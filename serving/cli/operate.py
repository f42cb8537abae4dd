"""Commands that operate a deployment: load, rollout."""

import io
import json
from pathlib import Path

import click
import numpy as np
import requests

from job.export import contract as c
from serving import ServingError, cli
from serving import rollout as r
from serving.cli.query import load_mnist_test
from serving.load import run_load
from serving.verify import verify

MAX_LOAD_SECONDS = 3600  # serving load stops by itself, whatever it is given


@cli.main.command()
@cli.server_options()
@click.option("--requests", "max_requests", type=click.IntRange(min=1), help="Requests to send.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True, max=MAX_LOAD_SECONDS),
    help=f"Seconds to send for.  [default: until --requests are sent, at most {MAX_LOAD_SECONDS}]",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    help="Requests in flight at once.",
)
@click.option(
    "--signature",
    type=click.Choice([c.SIGNATURE_PIXELS, c.SIGNATURE_PIXELS_FLOAT, c.SIGNATURE_IMAGE_BYTES]),
    default=c.SIGNATURE_PIXELS,
    help="The signature to load (pixels as uint8 or float32, or PNG bytes).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, c.MAX_BATCH),
    default=1,
    help="Images per request.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Exit 1 when more than this fraction of the requests failed.",
)
@cli.format_option
@cli.cache_dir_option
def load(
    server,
    model,
    version,
    max_requests,
    duration,
    concurrency,
    signature,
    batch_size,
    max_error_rate,
    output_format,
    cache_dir,
):
    """Load test: send MNIST test images to the address given until --requests are sent or
    --duration has passed; print throughput, latency, errors by code and which version answered."""
    if max_requests is None and duration is None:
        raise click.UsageError("give --requests N, --duration SECONDS, or both")
    images, _ = load_mnist_test(cache_dir)
    make_sender = sender_factory(server, model, version, signature, batch_size, images)
    seconds = duration or MAX_LOAD_SECONDS
    result = run_load(make_sender, batch_size, concurrency, max_requests, seconds, progress)
    click.echo("", err=True)
    answered = answering_version(server, model, version)
    if output_format == "json":
        summary = {"target": server.target, "signature": signature, "version": answered}
        click.echo(json.dumps({**summary, **result.summary()}))
    else:
        click.echo(f"{server.target} {signature} version {answered or '-'}\n{result.table()}")
    failed = sum(result.errors.values())
    if failed > max_error_rate * result.requests:
        raise ServingError(
            f"{failed} of {result.requests} requests failed; --max-error-rate is {max_error_rate:g}"
        )


def sender_factory(server, model, version, signature, batch_size, images):
    """run_load's make_sender: a connection per worker; request i sends rows i*batch_size..."""
    pngs = [encode_png(p) for p in images[:256]] if signature == c.SIGNATURE_IMAGE_BYTES else None

    def make_sender():
        if server.rest:
            reuse = {"session": requests.Session()}
        else:  # deferred: only gRPC needs them; TensorFlow is imported before the clock
            import grpc
            import tensorflow  # noqa: F401

            reuse = {"channel": grpc.insecure_channel(server.target)}

        def send(i: int) -> None:
            rows = range(i * batch_size, (i + 1) * batch_size)
            given = (
                {"image_bytes": [pngs[r % len(pngs)] for r in rows]}
                if pngs
                else {"pixels": np.take(images, rows, axis=0, mode="wrap")}
            )
            server.predict(model, version=version, signature=signature, **given, **reuse)

        return send

    return make_sender


def progress(so_far) -> None:
    rate = len(so_far.latencies) / so_far.seconds if so_far.seconds else 0.0
    errors = sum(so_far.errors.values())
    click.echo(f"\r{so_far.requests} requests, {errors} errors, {rate:.0f}/s ", nl=False, err=True)


def encode_png(pixels) -> bytes:
    from PIL import Image  # deferred: only --signature predict_image needs Pillow

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@cli.main.group()
def rollout() -> None:
    """Staged rollouts with version labels: each step rewrites the config file the server polls
    and waits until it is served, or puts the file back as it was."""


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=f"models/{c.MODEL_NAME}.config",
    help="The model config file the server polls (make serve writes and mounts this one).",
)
wait_option = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=120.0,
    help="Seconds to wait for the server to serve each change.",
)


rollout_step = cli.option_group(
    cli.server_options(with_version=False), config_option, wait_option, cli.export_dir_option
)


def relabel(server, model: str, config_path: Path, labels: dict, label: str, wait: float):
    """Serve ``labels`` and wait until the server's ``label`` names its version."""
    r.serve(config_path, model, labels)
    r.wait_for(lambda: server.version_of(model, label), labels[label], f"label {label}", wait)


def answering_version(server, model: str, version) -> int | None:
    try:
        return server.version_of(model, version)
    except ServingError:
        return None


@rollout.command("start")
@config_option
@cli.model_option
@click.option(
    "--base-path",
    default=f"/models/{c.MODEL_NAME}",
    help="The model base path as the server sees it: absolute, or a URI.",
)
@click.argument("version", type=click.IntRange(min=1))
def rollout_start(config_path, model, base_path, version):
    """Write a first config that serves VERSION as stable (before starting the server)."""
    r.start_config(config_path, model, base_path, version)
    click.echo(f"{config_path}: {model} version {version} is {r.STABLE}")


@rollout.command("canary")
@rollout_step
@click.argument("version", type=click.IntRange(min=1))
def rollout_canary(server, model, config_path, wait, export_dir, version):
    """Load VERSION (an export that passed the quality gate) beside stable, then label it
    canary once the server has it."""
    labels = r.labels_of(config_path, model, r.STABLE)
    if export_dir.is_dir() and not (export_dir / str(version)).is_dir():
        raise ServingError(f"{export_dir}: no version {version} to load")
    with r.restored_on_failure(config_path):
        r.serve(config_path, model, labels, extra=version)

        def available():
            entry = server.status(model, version)["model_version_status"][0]
            return version if r.loaded(entry) else None

        r.wait_for(available, version, f"{model} version {version}", wait)
        relabel(server, model, config_path, {**labels, r.CANARY: version}, r.CANARY, wait)
    click.echo(f"{server.target}: {model} version {version} is {r.CANARY}")


@rollout.command("promote")
@rollout_step
@cli.run_option
@cli.cache_dir_option
def rollout_promote(server, model, config_path, wait, export_dir, run_dir, cache_dir):
    """Make canary stable once serving verify --label canary agrees with the report of the
    run that made it; the old stable becomes previous."""
    labels = r.labels_of(config_path, model, r.CANARY)
    images, test_labels = load_mnist_test(cache_dir)
    summary = verify(server, model, r.CANARY, run_dir, export_dir, images, test_labels, 256)
    new = {r.STABLE: labels[r.CANARY], r.CANARY: labels[r.CANARY]}
    if labels.get(r.STABLE, new[r.STABLE]) != new[r.STABLE]:
        new[r.PREVIOUS] = labels[r.STABLE]
    with r.restored_on_failure(config_path):
        relabel(server, model, config_path, new, r.STABLE, wait)
    click.echo(f"{summary}\n{model} version {new[r.STABLE]} is {r.STABLE}")


@rollout.command("rollback")
@rollout_step
def rollout_rollback(server, model, config_path, wait, export_dir):
    """Put the previous stable back as stable and unload the version it replaced."""
    labels = r.labels_of(config_path, model, r.PREVIOUS)
    with r.restored_on_failure(config_path):
        relabel(server, model, config_path, {r.STABLE: labels[r.PREVIOUS]}, r.STABLE, wait)
    click.echo(f"{model} version {labels[r.PREVIOUS]} is {r.STABLE} again")


@rollout.command("status")
@cli.server_options(with_version=False)
@config_option
@cli.format_option
def rollout_status(server, model, config_path, output_format):
    """Each version the server knows, with its state and the labels that name it there,
    and the config file's versions and labels."""
    entry = r.read_config(config_path, model)[1]
    labels = dict(sorted(entry.version_labels.items()))
    served = {label: answering_version(server, model, label) for label in labels}
    versions = [
        {
            "version": int(e["version"]),
            "state": e["state"],
            "labels": [name for name, v in served.items() if v == int(e["version"])],
            "error": e.get("status", {}).get("error_message", ""),
        }
        for e in server.status(model)["model_version_status"]
    ]
    listed = list(entry.model_version_policy.specific.versions)
    if output_format == "json":
        config = {"path": str(config_path), "versions": listed, "labels": labels}
        answer = {"target": server.target, "model": model, "versions": versions, "config": config}
        click.echo(json.dumps(answer))
        return
    click.echo(f"{'version':>7}  {'state':<10} labels")
    for v in versions:
        line = f"{v['version']:>7}  {v['state']:<10} {', '.join(v['labels'])} {v['error']}"
        click.echo(line.rstrip())
    named = ", ".join(f"{k} {v}" for k, v in labels.items()) or "no labels"
    click.echo(f"{config_path}: versions {', '.join(map(str, listed)) or 'by policy'}; {named}")
