"""``python -m job data``, ``export`` and ``report``."""

import json
from pathlib import Path

import click

from job.cli.options import (
    cache_dir_option,
    data_options,
    export_dir_option,
    export_version_option,
    gate_options,
)
from job.cpu import import_tensorflow
from job.errors import JobError


@click.command("data")
@data_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    help="table: one line for a person; json: the report's data section.",
)
def data_command(data_path: Path | None, cache_dir: Path, offline: bool, output_format: str):
    """Fetch (if needed) and verify MNIST without training."""
    from job.data import load_mnist

    info = load_mnist(data_path, cache_dir, allow_network=not offline).describe()
    if output_format == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"{info['train_examples']} train + {info['test_examples']} test images from "
        f"{info['source']} ({info['path']}); sha256 {info['sha256'][:16]}...; "
        f"{'byte-exact original MNIST' if info['canonical_mnist'] else 'not the original MNIST'}"
    )


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="A finished run directory (holds model.keras and metrics.json).",
)
@export_dir_option
@export_version_option
@gate_options
@cache_dir_option
def export(
    run_dir: Path,
    export_dir: Path,
    export_version: int | None,
    version: int | None,
    min_test_accuracy: float,
    gate: bool,
    gate_tolerance: float,
    cache_dir: Path,
) -> None:
    """Export a finished run's model.keras as a SavedModel for TensorFlow Serving, with its
    model card, gated as in train (--no-gate --min-test-accuracy 0 skips the gate)."""
    import_tensorflow(click.get_current_context().meta.get("verbose", False))
    from job import gate as quality_gate
    from job.data import load_mnist
    from job.export import model_card
    from job.export.savedmodel import export_for_serving
    from job.report import REPORT_FILENAME, read_report, run_record
    from job.rundir import load_trained_model

    model = load_trained_model(run_dir)
    report = read_report(run_dir) if (run_dir / REPORT_FILENAME).exists() else None
    if gate or min_test_accuracy:
        if report is None:
            raise JobError(
                f"{run_dir}: no {REPORT_FILENAME} to gate on; pass --no-gate --min-test-accuracy 0"
            )
        blessing = quality_gate.decide(
            report["test"]["accuracy"], export_dir, min_test_accuracy, gate, gate_tolerance
        )
        quality_gate.refuse_unblessed(blessing, export_dir)
    record = run_record(report) if report else None
    card = None
    if report:  # the model card; its limits where verified MNIST is cached
        try:
            arrays = load_mnist(None, cache_dir, allow_network=False).arrays
        except JobError:
            card = model_card.build_card(report, None, f"no verified MNIST in {cache_dir}")
        else:
            limits = model_card.measure_limits(model, arrays.x_test, arrays.y_test)
            card = model_card.build_card(report, limits)
    path = export_for_serving(model, export_dir, export_version or version, record, card)
    click.echo(str(path))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--group-by",
    metavar="COLUMNS",
    help="Summarise runs per group of these columns, e.g. recipe,epochs: count, mean, std, "
    "min and max of test accuracy and training time (a sweep of seeds reads as one row).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "markdown", "csv", "json", "html"]),
    default="table",
    help="html: a self-contained sweep page with the spread per group as a plot; markdown: "
    "the same as text, for GitHub job summaries and pull requests.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (atomically) instead of printing.",
)
def report(
    paths: tuple[Path, ...],
    group_by: str | None,
    output_format: str,
    output: Path | None,
):
    """Print metrics reports (files or run directories), one row per run or per group."""
    from job import pages
    from job.files import write_atomic
    from job.report import format_table, read_report, reports_table, summarize_groups

    runs = reports_table([read_report(p) for p in paths])
    columns = [c.strip() for c in (group_by or "").split(",") if c.strip()]
    groups = summarize_groups(runs, columns) if group_by else None
    if output_format == "html":
        from job import plots

        spread = plots.figure_png(plots.spread_figure(runs, columns or ["recipe"]))
        text = pages.sweep_page(runs, groups, columns, spread)
    elif output_format == "markdown":
        text = pages.sweep_markdown(runs, groups, columns or ["recipe"])
    else:
        text = format_table(runs if groups is None else groups, output_format)
    if output is None:
        click.echo(text)
    else:
        write_atomic(output, lambda f: f.write((text + "\n").encode()))
        click.echo(str(output))
