"""The JSON metrics report: its environment and timings, writing and reading it, tables."""

import json
import platform
import statistics
from pathlib import Path

import numpy
import pandas as pd

from job.cpu import cpu_description, onednn_enabled
from job.errors import JobError
from job.export.contract import REPORT_FILE as REPORT_FILENAME
from job.files import write_json_atomic

SCHEMA_VERSION = 1


def environment(device_info: dict) -> dict:
    """The libraries and devices that ran."""
    import keras  # deferred with TensorFlow: `job report` reads reports without loading them
    import tensorflow as tf

    gpu = device_info["used"] == "gpu"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "cpu": cpu_description(),
        "onednn": onednn_enabled(),
        # The build's CUDA and cuDNN say nothing of a run on the CPU.
        "device": {k: v for k, v in device_info.items() if gpu or not k.startswith("cud")},
    }


# The run record: what made a model and how well it does, kept beside every export
# (assets.extra/mnist_job.json) whichever command wrote it.
RUN_RECORD = ("config", "environment", "data", "model", "test")


def run_record(report: dict) -> dict:
    return {k: report[k] for k in RUN_RECORD}


def timings(epoch_seconds: list[float], train_seconds: float, examples: int, total: float) -> dict:
    """The report's timings: every epoch, the median, and examples per second at the median."""
    median_epoch = statistics.median(epoch_seconds)
    return {
        "total_seconds": total,
        "train_seconds": train_seconds,
        "epoch_seconds": epoch_seconds,
        "median_epoch_seconds": median_epoch,
        "examples_per_second": examples / median_epoch if median_epoch else 0.0,
    }


def write_report(run_dir: Path, report: dict) -> Path:
    return write_json_atomic(run_dir / REPORT_FILENAME, report)


def read_report(path: Path) -> dict:
    """A metrics.json, or the one in a run directory; JobError if it is not a report."""
    path = path / REPORT_FILENAME if path.is_dir() else path
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobError(f"{path}: no such report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"{path}: not a readable JSON report ({exc})") from None
    if not isinstance(report, dict) or "schema_version" not in report:
        raise JobError(f"{path}: not a metrics report (no schema_version)")
    report["_path"] = str(path)
    return report


def reports_table(reports: list[dict]) -> pd.DataFrame:
    """One row per run: what was run, how well it did and how fast, for comparing runs."""
    rows = []
    for r in reports:
        train = r["config"]["train"]
        rows.append(
            {
                "run": Path(r["_path"]).parent.name,  # read_report names every report
                "recipe": train["recipe"],
                "seed": train["seed"],
                "epochs": len(r["training"]["history"]),
                "batch": train["batch_size"],
                "train_images": r["data"]["train_examples"],
                "device": r["environment"]["device"]["used"],
                "replicas": r["distribution"]["replicas"],
                "test_acc": round(r["test"]["accuracy"], 4),
                "test_loss": round(r["test"]["loss"], 4),
                "s/epoch": round(r["timings"]["median_epoch_seconds"], 2),
                "ex/s": round(r["timings"]["examples_per_second"]),
                "train_s": round(r["timings"]["train_seconds"], 1),
                "data": r["data"]["source"],
            }
        )
    return pd.DataFrame(rows)


SUMMARISED = ("test_acc", "train_s")  # the columns summarised per group


def summarize_groups(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per group: the run count, and mean, std, min and max of each SUMMARISED."""
    unknown = [c for c in columns if c not in table.columns]
    if unknown or not columns:
        raise JobError(
            f"--group-by {','.join(unknown) or '(nothing)'}: not a column; "
            f"choose from {', '.join(c for c in table.columns if c not in SUMMARISED)}"
        )
    groups = table.groupby(columns, sort=True, dropna=False)
    out = groups.size().rename("runs").to_frame()
    for column in SUMMARISED:
        stats = groups[column].agg(["mean", "std", "min", "max"]).fillna(0.0)
        out = out.join(stats.rename(columns=lambda stat, c=column: f"{c}_{stat}"))
    return out.reset_index().round(4)


def format_table(table: pd.DataFrame, output_format: str) -> str:
    if output_format == "json":
        return table.to_json(orient="records", indent=2)
    if output_format == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if output_format == "markdown":
        header = "| " + " | ".join(map(str, table.columns)) + " |"
        rule = "| " + " | ".join("---" for _ in table.columns) + " |"
        rows = ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
        return "\n".join([header, rule, *rows])
    with pd.option_context("display.width", 200, "display.max_columns", None):
        return table.to_string(index=False)
