"""Commands that ask a served model: predict, status, metadata, verify, card."""

import json
from pathlib import Path

import click
import numpy as np

from job.export import contract as c
from serving import ServingError, cli, client, inputs
from serving.verify import verify as verify_deployment


def json_alias(ctx, param, value):
    """--json, kept for one release: --format json."""
    if value:
        click.echo("warning: --json is deprecated; use --format json", err=True)
        ctx.params["output_format"] = "json"


json_alias_option = click.option(
    "--json", is_flag=True, hidden=True, expose_value=False, callback=json_alias
)


@cli.main.command()
@cli.server_options()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--mnist-test",
    "mnist_range",
    metavar="START:STOP",
    callback=cli.address(inputs.parse_index_range),
    help="Send MNIST test images by index (needs the data cache: make data).",
)
@cli.cache_dir_option
@click.option(
    "--invert",
    is_flag=True,
    help="Images are dark digits on light paper: decode here and invert (MNIST is light on dark).",
)
@cli.format_option
@json_alias_option
def predict(server, model, version, files, mnist_range, cache_dir, invert, output_format):
    """Classify image files (PNG/JPEG, any size: resized to 28x28 in the model), .npy pixel
    arrays ([28, 28] or [N, 28, 28], 0..255) and/or MNIST test images."""
    if not files and mnist_range is None:
        raise click.UsageError("nothing to send: give image files, .npy files or --mnist-test")
    names, truths, batches = gather_inputs(files, mnist_range, cache_dir, invert)
    results = [server.predict(model, version=version, **batch) for batch in batches]
    answered = results[0].get("version") or server.version_of(model, version)
    click.echo(f"{server.target}: {model} version {answered} answered", err=True)
    probabilities = np.concatenate([r[c.OUTPUT_PROBABILITIES] for r in results])
    digits = np.concatenate([r[c.OUTPUT_DIGIT] for r in results])
    rows = [
        {"input": name, "digit": int(digit), "confidence": float(prob.max()), "true": truth}
        for name, digit, prob, truth in zip(names, digits, probabilities, truths, strict=True)
    ]
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'input':<28} {'digit':>5} {'confidence':>10} {'true':>5}")
    for row in rows:
        true = "" if row["true"] is None else str(row["true"])
        click.echo(f"{row['input']:<28} {row['digit']:>5} {row['confidence']:>10.4f} {true:>5}")


def gather_inputs(files, mnist_range: slice | None, cache_dir: Path, invert: bool):
    """-> (row names, true digits or None, request batches: encoded images, then pixels)."""
    rows = {"image_bytes": [], "pixels": []}  # (name, true digit or None, value) per kind
    for path in files:
        if not path.exists():
            raise ServingError(f"{path}: no such file")
        if path.suffix.lower() == ".npy":
            array = inputs.read_npy(path)
            rows["pixels"] += [(f"{path.name}[{i}]", None, image) for i, image in enumerate(array)]
        elif invert:
            rows["pixels"].append((path.name, None, inputs.image_to_pixels(path, invert=True)))
        else:
            rows["image_bytes"].append((path.name, None, inputs.read_image_bytes(path)))
    if mnist_range is not None:
        images, labels = load_mnist_test(cache_dir, mnist_range)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            rows["pixels"].append((f"mnist-test[{mnist_range.start + i}]", int(label), image))
    ordered = rows["image_bytes"] + rows["pixels"]
    client.check_batch(len(ordered))
    batches = [{kind: [value for *_, value in given]} for kind, given in rows.items() if given]
    return [name for name, *_ in ordered], [truth for _, truth, _ in ordered], batches


def load_mnist_test(cache_dir: Path, indices: slice = slice(None)):
    """MNIST test images from the verified cache the job fills (no network)."""
    try:
        with np.load(cache_dir / c.MNIST_FILE, allow_pickle=False) as arrays:
            images, labels = arrays["x_test"], arrays["y_test"]
    except (OSError, ValueError, KeyError):
        raise ServingError(
            f"no verified MNIST in {cache_dir}: fill it with `python -m job data "
            "--cache-dir DIR` (or make data), or pass --cache-dir"
        ) from None
    if indices.stop is not None and indices.stop > len(images):
        raise ServingError(f"--mnist-test: the test set has {len(images)} images")
    return images[indices], labels[indices]


@cli.main.command()
@cli.server_options()
def status(server, model, version):
    """Model version status (REST GET /v1/models/<model>, gRPC GetModelStatus)."""
    click.echo(json.dumps(server.status(model, version), indent=2))


@cli.main.command()
@cli.server_options()
def metadata(server, model, version):
    """Signatures with their inputs and outputs (REST .../metadata, gRPC GetModelMetadata)."""
    click.echo(json.dumps(server.metadata(model, version), indent=2))


@cli.main.command()
@cli.server_options()
@cli.run_option
@cli.export_dir_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, c.MAX_BATCH),
    default=256,
    help="Images per request.",
)
@cli.cache_dir_option
def verify(server, model, version, run_dir, export_dir, batch_size, cache_dir):
    """Post-deploy check: the served signatures and accuracy on the whole MNIST test set against
    the report of the run that made the version served. Exit 0 only when they agree."""
    images, labels = load_mnist_test(cache_dir)
    click.echo(
        verify_deployment(server, model, version, run_dir, export_dir, images, labels, batch_size)
    )


@cli.main.command()
@click.argument("export", type=click.Path(path_type=Path, file_okay=False))
@cli.format_option
@json_alias_option
def card(export, output_format):
    """Print the model card of an export: a version folder (models/mnist/3), or a model base
    path (models/mnist: its newest version)."""
    versions = sorted(int(p.name) for p in export.glob("*") if p.name.isdigit() and p.is_dir())
    folder = export / str(versions[-1]) if versions else export
    path = folder / "assets.extra" / (c.CARD_JSON if output_format == "json" else c.CARD_MARKDOWN)
    try:
        text = path.read_text()
        if output_format == "json":
            text = json.dumps(json.loads(text), indent=2) + "\n"
        click.echo(text, nl=False)
    except FileNotFoundError:
        raise ServingError(f"{folder}: no model card ({path.name} missing)") from None
    except (OSError, ValueError) as exc:
        raise ServingError(f"{folder}: cannot read the model card ({exc})") from None
