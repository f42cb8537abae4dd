"""The quality gate before export, and reports that read a whole sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from job import gate
from job.cli import main
from job.errors import NotBlessed
from job.export import contract as c

pytestmark = pytest.mark.integration


def fake_version(export_dir: Path, version: int, accuracy: float | None) -> None:
    """A version folder whose run record states ``accuracy`` (None: no record)."""
    extra = export_dir / str(version) / "assets.extra"
    extra.mkdir(parents=True)
    if accuracy is not None:
        (extra / c.RUN_INFO_FILE).write_text(json.dumps({"test": {"accuracy": accuracy}}))


@pytest.mark.parametrize(
    ("accuracy", "floor", "versions", "blessed", "because"),
    [
        (0.98, 0, [], True, None),  # nothing to compare with
        (0.98, 0.99, [], False, "under --min-test-accuracy 0.99"),
        (0.98, 0, [(1, 0.984)], True, None),  # within the tolerance
        (0.97, 0, [(1, 0.984)], False, "under version 1's 0.9840"),
        (0.97, 0, [(1, 0.984), (2, 0.95)], True, None),  # the newest version is the baseline
        (0.97, 0, [(1, 0.984), (2, None)], False, "version 1"),  # no record: skipped
    ],
)
def test_gate_decisions(tmp_path, accuracy, floor, versions, blessed, because):
    for version, recorded in versions:
        fake_version(tmp_path, version, recorded)
    decision = gate.decide(accuracy, tmp_path, floor, compare=True)
    assert decision["blessed"] is blessed
    if because:
        assert because in decision["reason"]
    else:
        assert decision["reason"] is None


def train(mnist_path, tmp_path, *extra) -> tuple:
    run_dir, export_dir = tmp_path / "run", tmp_path / "models"
    args = ["train", "--data", str(mnist_path), "--limit", "2000", "--epochs", "1"]
    args += ["--output-dir", str(run_dir), "--export-dir", str(export_dir), *extra]
    result = CliRunner().invoke(main, args)
    return result, run_dir, export_dir


def test_a_run_under_the_floor_writes_everything_but_a_version(tmp_path, mnist_path):
    result, run_dir, export_dir = train(mnist_path, tmp_path, "--min-test-accuracy", "0.999")
    assert result.exit_code == NotBlessed.exit_code, result.output
    assert "not exported" in result.output and "0.999" in result.output
    assert not export_dir.exists() or not any(export_dir.iterdir())
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["blessing"]["blessed"] is False
    assert "under --min-test-accuracy 0.999" in report["blessing"]["reason"]
    assert report["artifacts"]["export"] is None
    assert (run_dir / "model.keras").exists() and (run_dir / "predictions.png").exists()


def test_a_worse_run_is_held_back_unless_the_gate_is_off(tmp_path, mnist_path):
    (tmp_path / "models").mkdir()
    fake_version(tmp_path / "models", 3, 0.999)
    result, run_dir, export_dir = train(mnist_path, tmp_path)
    assert result.exit_code == NotBlessed.exit_code
    assert "version 3's 0.9990" in result.output
    assert sorted(p.name for p in export_dir.iterdir()) == ["3"]

    result, run_dir, export_dir = train(mnist_path, tmp_path, "--no-gate", "--overwrite")
    assert result.exit_code == 0, result.output
    blessing = json.loads((run_dir / "metrics.json").read_text())["blessing"]
    assert blessing == {
        "blessed": True, "reason": None, "min_test_accuracy": 0.5, "baseline": None,
        "tolerance": None,
    }  # fmt: skip
    assert sorted(p.name for p in export_dir.iterdir()) == ["3", "4"]


def test_a_smoke_run_is_not_exported_unless_the_floor_is_lowered(tmp_path, mnist_path):
    args = ["--limit", "5"]
    result, run_dir, export_dir = train(mnist_path, tmp_path, *args)
    assert result.exit_code == NotBlessed.exit_code, result.output
    (line,) = result.output.splitlines()[-1:]
    assert line.startswith(f"error: {export_dir}: not exported: test accuracy 0.")
    assert "under --min-test-accuracy 0.5 (pass a lower one, or 0, to export it anyway)" in line
    assert not export_dir.exists() or not any(export_dir.iterdir())
    result, *_ = train(mnist_path, tmp_path, *args, "--min-test-accuracy", "0", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in export_dir.iterdir()) == ["1"]


def test_a_passing_run_records_its_baseline(tmp_path, mnist_path):
    (tmp_path / "models").mkdir()
    fake_version(tmp_path / "models", 1, 0.5)
    result, run_dir, _ = train(mnist_path, tmp_path)
    assert result.exit_code == 0, result.output
    blessing = json.loads((run_dir / "metrics.json").read_text())["blessing"]
    assert blessing["blessed"] is True
    assert blessing["baseline"] == {"version": 1, "test_accuracy": 0.5}
    assert blessing["tolerance"] == gate.DEFAULT_TOLERANCE


def test_the_export_command_applies_the_same_gate(trained_run, tmp_path):
    export_dir = tmp_path / "models"
    fake_version(export_dir, 1, 0.9999)
    args = ["export", "--run", str(trained_run["run_dir"]), "--export-dir", str(export_dir)]
    held = CliRunner().invoke(main, args)
    assert held.exit_code == NotBlessed.exit_code and "not exported" in held.output
    assert sorted(p.name for p in export_dir.iterdir()) == ["1"]
    assert CliRunner().invoke(main, [*args, "--no-gate"]).exit_code == 0
    assert sorted(p.name for p in export_dir.iterdir()) == ["1", "2"]


# --------------------------------------------------------------------------- sweeps


def write_report(path: Path, seed: int, accuracy: float, seconds: float, recipe="default"):
    """A report with the fields the table reads."""
    path.mkdir(parents=True)
    report = {
        "schema_version": 1,
        "config": {"train": {"recipe": recipe, "batch_size": 32, "seed": seed}},
        "training": {"history": [{"epoch": 1}, {"epoch": 2}]},
        "environment": {"device": {"used": "cpu"}},
        "distribution": {"replicas": 1},
        "test": {"accuracy": accuracy, "loss": 0.05},
        "timings": {
            "median_epoch_seconds": 1.0,
            "examples_per_second": 60000.0,
            "train_seconds": seconds,
        },
        "data": {"source": "cache", "train_examples": 60000},
    }
    (path / "metrics.json").write_text(json.dumps(report))


def test_a_sweep_of_seeds_reads_as_one_row_per_configuration(tmp_path):
    for seed, accuracy in ((1, 0.98), (2, 0.99), (3, 0.985)):
        write_report(tmp_path / f"seed-{seed}", seed, accuracy, 10.0 + seed)
    write_report(tmp_path / "fast-1", 1, 0.991, 20.0, recipe="fast")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    result = CliRunner().invoke(
        main, ["report", *paths, "--group-by", "recipe,epochs", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = {row["recipe"]: row for row in json.loads(result.output)}
    default = rows["default"]
    assert default["runs"] == 3 and default["epochs"] == 2
    assert default["test_acc_mean"] == pytest.approx(0.985)
    assert default["test_acc_std"] == pytest.approx(0.005)
    assert (default["test_acc_min"], default["test_acc_max"]) == (0.98, 0.99)
    assert default["train_s_mean"] == pytest.approx(12.0)
    assert rows["fast"]["runs"] == 1 and rows["fast"]["test_acc_std"] == 0


@pytest.mark.parametrize(
    ("output_format", "first_line"),
    [
        ("markdown", "| recipe | runs | test_acc_mean"),
        ("csv", "recipe,runs,test_acc_mean"),
        ("table", "recipe  runs  test_acc_mean"),
    ],
)
def test_sweep_formats(tmp_path, output_format, first_line):
    for seed in (1, 2):
        write_report(tmp_path / f"s{seed}", seed, 0.98, 10.0)
    paths = sorted(str(p) for p in tmp_path.iterdir())
    result = CliRunner().invoke(
        main, ["report", *paths, "--group-by", "recipe", "--format", output_format]
    )
    assert result.exit_code == 0, result.output
    assert result.output.lstrip().startswith(first_line)


def test_grouping_by_an_unknown_column_is_one_line(tmp_path):
    write_report(tmp_path / "a", 1, 0.98, 10.0)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "a"), "--group-by", "colour"])
    assert result.exit_code == 2 and "--group-by colour: not a column" in result.output
