"""The click CLI end to end on small data the tests make: outputs, and bad input."""

import json

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from job.cli import main
from tests.conftest import load_schema

pytestmark = pytest.mark.integration

FIGURES = ["accuracy.png", "loss.png", "predictions.png", "confusion_matrix.png"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def train_args(data, run_dir, *extra):
    return ["train", "--data", data, "--output-dir", run_dir, "--no-export", "--epochs", 2, *extra]


def test_train_writes_a_valid_report_figures_and_model(tmp_path, synthetic_npz):
    run_dir = tmp_path / "run"
    result = run(*train_args(synthetic_npz, run_dir, "--validation-split", 0.2))
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "metrics.json").read_text())
    jsonschema.validate(report, load_schema())
    assert [e["epoch"] for e in report["training"]["history"]] == [1, 2]
    assert "val_accuracy" in report["training"]["history"][0]
    assert report["training"]["recipe"]["weight_decay"] is None  # the seed's plain Adam
    assert report["data"] == report["data"] | {
        "source": "file",
        "train_examples": 480,
        "validation_examples": 120,
        "test_examples": 200,
    }
    assert report["model"]["parameters"] == 105_306
    assert report["config"]["train"]["epochs"] == 2
    assert report["environment"]["device"]["used"] == "cpu"
    assert report["test"]["accuracy"] > 0.8  # the fake digits are easy
    assert report["timings"]["examples_per_second"] > 0
    for name in FIGURES:
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "model.keras").stat().st_size > 0
    assert not list(run_dir.glob(".*.tmp*"))


def test_report_command_prints_a_table(tmp_path, synthetic_npz):
    for name in ("a", "b"):
        assert run(*train_args(synthetic_npz, tmp_path / name, "--epochs", 1)).exit_code == 0
    result = run("report", tmp_path / "a", tmp_path / "b" / "metrics.json")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "test_acc" in lines[0] and len(lines) == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "0"], "must be a positive integer"),
        (["--epochs", "-3"], "must be a positive integer"),
        (["--batch-size", "0"], "must be a positive integer"),
        (["--validation-split", "1.5"], "must be in [0, 1)"),
        (["--validation-split", "-0.1"], "must be in [0, 1)"),
        (["--limit", "100000"], "larger than the 600 training images"),
        (["--device", "gpu"], "no GPU is visible"),
        (["--device", "tpu"], "Invalid value for '--device'"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, synthetic_npz, extra, message):
    run_dir = tmp_path / "run"
    result = run(*train_args(synthetic_npz, run_dir), *extra)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (run_dir / "metrics.json").exists()


def test_corrupt_data_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz at all")
    result = run(*train_args(bad, tmp_path / "run"))
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith("error: ") and str(bad) in result.output
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_unwritable_output_dir(tmp_path, synthetic_npz):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    result = run(*train_args(synthetic_npz, blocker / "run"))
    assert result.exit_code == 2
    assert "not writable" in result.output


def test_finished_run_is_not_overwritten_without_flag(tmp_path, synthetic_npz):
    run_dir = tmp_path / "run"
    assert run(*train_args(synthetic_npz, run_dir, "--epochs", 1)).exit_code == 0
    before = (run_dir / "metrics.json").read_bytes()
    result = run(*train_args(synthetic_npz, run_dir, "--epochs", 1))
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (run_dir / "metrics.json").read_bytes() == before
    again = run(*train_args(synthetic_npz, run_dir, "--epochs", 1, "--overwrite", "--seed", 7))
    assert again.exit_code == 0
    assert json.loads((run_dir / "metrics.json").read_text())["config"]["train"]["seed"] == 7


def test_data_command_verifies(tmp_path, mnist_path):
    result = run("data", "--data", mnist_path)
    assert result.exit_code == 0
    assert "60000 train + 10000 test" in result.output and "byte-exact" in result.output


def test_help_lists_the_commands():
    result = run("--help")
    for command in ("train", "data", "export", "report"):
        assert command in result.output


def test_limit_uses_a_subset(tmp_path, synthetic_npz):
    result = run(*train_args(synthetic_npz, tmp_path / "run", "--limit", 100, "--epochs", 1))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["data"]["train_examples"] == 100
    assert np.isclose(
        report["timings"]["examples_per_second"] * report["timings"]["median_epoch_seconds"], 100
    )


def test_fast_recipe_resolves_its_defaults_and_records_them(tmp_path, synthetic_npz):
    run_dir = tmp_path / "run"
    result = run(
        "train",
        "--data",
        synthetic_npz,
        "--output-dir",
        run_dir,
        "--no-export",
        "--recipe",
        "fast",
        "--epochs",
        3,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "metrics.json").read_text())
    jsonschema.validate(report, load_schema())
    train = report["config"]["train"]
    assert (train["recipe"], train["batch_size"], train["validation_split"]) == ("fast", 128, 0)
    assert report["data"]["validation_examples"] == 0
    assert [e["epoch"] for e in report["training"]["history"]] == [1, 2, 3]
    assert report["test"]["accuracy"] > 0.8
