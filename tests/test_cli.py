"""The click CLI end to end on small data the tests make: outputs, and bad input."""

import json
import os
import re
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from job import errors
from job.cli import main
from tests.conftest import REPO, load_schema

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
    assert lines[0].split().index("train_images") == lines[1].split().index("600")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "0"], "is not in the range x>=1"),
        (["--epochs", "-3"], "is not in the range x>=1"),
        (["--batch-size", "0"], "is not in the range x>=1"),
        (["--export-version", "0"], "is not in the range x>=1"),
        (["--validation-split", "1.5"], "is not in the range 0<=x<1"),
        (["--validation-split", "-0.1"], "is not in the range 0<=x<1"),
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


def stop_after_the_first_epoch(monkeypatch):
    """Ctrl-C once the first epoch is backed up, as a person would press it."""
    from job.training.callbacks import EpochBackup

    backup = EpochBackup.on_epoch_end

    def interrupted(self, epoch, logs=None):
        backup(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochBackup, "on_epoch_end", interrupted)


def test_a_rerun_resumes_only_the_same_run(tmp_path, synthetic_npz, monkeypatch):
    run_dir = tmp_path / "run"
    stop_after_the_first_epoch(monkeypatch)
    stopped = run(*train_args(synthetic_npz, run_dir))
    assert stopped.exit_code == 130
    assert f"error: {run_dir}: interrupted; run the same command again to resume" in stopped.output
    monkeypatch.undo()
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for extra, named in [
        (["--batch-size", 64], "--batch-size 32 (now 64)"),
        (["--recipe", "fast"], "--recipe default (now fast), --batch-size 32 (now 128)"),
        (["--epochs", 1], "--epochs 2 (now 1)"),  # fewer epochs than the run was given
    ]:
        refused = run(*train_args(synthetic_npz, run_dir), *extra)
        assert refused.exit_code == 2, refused.output
        assert refused.output == (
            f"error: {run_dir}: an unfinished run with other options: {named}; rerun with its "
            "options to resume it, or pass --overwrite to start afresh\n"
        )
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files

    # --overwrite starts afresh under the new options, which a rerun must then keep.
    stop_after_the_first_epoch(monkeypatch)
    again = run(*train_args(synthetic_npz, run_dir, "--batch-size", 64, "--overwrite"))
    assert again.exit_code == 130
    monkeypatch.undo()
    # The default recipe's learning rate has no schedule: more epochs continue the same run.
    resumed = run(*train_args(synthetic_npz, run_dir, "--batch-size", 64, "--epochs", 3))
    assert resumed.exit_code == 0, resumed.output
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["config"]["train"]["batch_size"] == 64
    assert report["training"]["resumed_from_epoch"] == 1
    assert [e["epoch"] for e in report["training"]["history"]] == [1, 2, 3]
    assert sorted(p.name for p in run_dir.glob(".*")) == []  # no lock, no staging


def test_the_readme_table_of_exit_codes_is_the_codes_the_cli_keeps():
    readme = (REPO / "README.md").read_text()
    table = readme.split("| code | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)}
    classes = [c for c in vars(errors).values() if isinstance(c, type)]
    kept = {c.exit_code for c in classes if issubclass(c, errors.JobError)}
    assert documented == {0, 1} | kept


def test_every_test_the_readme_names_exists():
    readme = (REPO / "README.md").read_text()
    named = re.findall(r"`(test_\w+\.py)::(\w+)`((?:,\s*`::\w+`)*)", readme)
    assert len(named) > 20
    for module, first, more in named:
        source = (REPO / "tests" / module).read_text()
        for name in [first, *re.findall(r"::(\w+)", more)]:
            assert f"def {name}(" in source, f"README names {module}::{name}"


def train_in_a_process(tmp_path, synthetic_npz, *extra, env=None):
    command = [sys.executable, "-m", "job", *extra]
    command += train_args(synthetic_npz, tmp_path / "run", "--epochs", 1, "--overwrite")
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        list(map(str, command)), cwd=REPO, env=environ | (env or {}), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


# TensorFlow's C++ lines (I0000 00:00:... port.cc:153] ...) and absl's line before them.
TENSORFLOW_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog", re.M)


def test_a_run_shows_only_what_a_person_can_act_on(tmp_path, synthetic_npz):
    done = train_in_a_process(tmp_path, synthetic_npz)
    assert done.returncode == 0, done.stderr
    assert not TENSORFLOW_LINE.search(done.stderr), done.stderr
    assert "cuInit" not in done.stderr and "oneDNN" not in done.stderr
    run_dir = tmp_path / "run"
    assert done.stdout.splitlines()[-2:] == [
        f"report: {run_dir / 'report.html'}",
        f"next: python -m job export --run {run_dir}",
    ]
    report = json.loads((run_dir / "metrics.json").read_text())
    assert report["command"] == f"python -m job train --data {synthetic_npz} --output-dir " + (
        f"{run_dir} --no-export --epochs 2 --epochs 1 --overwrite"
    )
    assert (
        f"<code>python -m job train --data {synthetic_npz}" in (run_dir / "report.html").read_text()
    )
    if report["environment"]["device"]["used"] == "cpu":
        assert not {"cuda_version", "cudnn_version"} & set(report["environment"]["device"])
    assert not list(run_dir.glob(".lock*"))
    # TensorFlow speaks with -v, or at the level the user set.
    assert TENSORFLOW_LINE.search(train_in_a_process(tmp_path, synthetic_npz, "-v").stderr)
    chosen = train_in_a_process(tmp_path, synthetic_npz, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert TENSORFLOW_LINE.search(chosen.stderr)


def test_make_train_fits_one_screen_and_ends_with_the_page_and_the_next_step(
    tmp_path, synthetic_npz
):
    make = ["make", "--no-print-directory", "train", "RUNTIME=local"]
    make += [f"RUNS_DIR={tmp_path}/runs", f"MODELS_DIR={tmp_path}/models"]
    make += [f"ARGS=--data {synthetic_npz} --epochs 1"]
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        make, cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) <= 24, done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert lines[-2:] == [
        f"report: {run_dir / 'report.html'}",
        "next: make serve, then make verify (or python -m serving predict --help)",
    ]


def test_one_spelling_for_versions_and_formats(tmp_path, mnist_path):
    from job import __version__

    assert run("--version").output == f"main, version {__version__}\n"
    described = json.loads(run("data", "--data", mnist_path, "--format", "json").output)
    assert described["train_examples"] == 60000 and described["canonical_mnist"] is True
    for command in ("train", "export"):
        help_text = run(command, "--help").output
        assert "--export-version" in help_text and "--version" not in help_text.replace(
            "--export-version", ""
        )


def test_the_old_export_version_spelling_still_works_with_a_warning(tmp_path, synthetic_npz):
    args = [*train_args(synthetic_npz, tmp_path / "run", "--epochs", 1)]
    args[args.index("--no-export")] = "--export"
    result = run(*args, "--export-dir", tmp_path / "models", "--version", 3)
    assert result.exit_code == 0, result.output
    assert "The option 'version' is deprecated. Use --export-version." in result.output
    assert (tmp_path / "models" / "3" / "saved_model.pb").exists()
