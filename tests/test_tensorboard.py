"""TensorBoard event files: per-epoch scalars equal to the report, figures, hparams, and
TensorBoard itself serving them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from job.cli import main
from tests.conftest import free_port, read_scalars, summary_tags

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, mnist_path) -> Path:
    """A short run with a validation split and a learning-rate schedule."""
    run_dir = tmp_path_factory.mktemp("tb") / "runs" / "fast"
    args = ["train", "--data", str(mnist_path), "--recipe", "fast", "--limit", "3000"]
    args += ["--epochs", "3", "--validation-split", "0.1", "--output-dir", str(run_dir)]
    args += ["--no-export"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return run_dir


def report_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_each_epoch_is_logged_once_with_the_reports_values(fast_run):
    history = report_of(fast_run)["training"]["history"]
    train = read_scalars(fast_run / "tensorboard" / "train")
    validation = read_scalars(fast_run / "tensorboard" / "validation")
    steps = [epoch["epoch"] for epoch in history]  # from 1, as the report and the figures
    for scalars, tag, key in [
        (train, "epoch_loss", "loss"),
        (train, "epoch_accuracy", "accuracy"),
        (train, "epoch_learning_rate", "learning_rate"),
        (validation, "epoch_loss", "val_loss"),
        (validation, "epoch_accuracy", "val_accuracy"),
    ]:
        assert [step for step, _ in scalars[tag]] == steps, tag
        expected = [epoch[key] for epoch in history]
        assert [value for _, value in scalars[tag]] == pytest.approx(expected, rel=1e-6), tag
    rates = [value for _, value in train["epoch_learning_rate"]]
    assert len(set(rates)) == len(rates)  # the fast recipe's schedule, epoch by epoch


def test_figures_hparams_and_test_metrics_are_logged(fast_run):
    log_dir = fast_run / "tensorboard"
    tags = summary_tags(log_dir)
    for figure in ("accuracy", "loss", "predictions", "confusion_matrix"):
        assert f"figures/{figure}" in tags
    assert "_hparams_/session_start_info" in tags
    scalars = read_scalars(log_dir)
    test = report_of(fast_run)["test"]
    assert scalars["test/accuracy"] == [(0, pytest.approx(test["accuracy"], rel=1e-6))]
    assert scalars["test/loss"] == [(0, pytest.approx(test["loss"], rel=1e-6))]


def test_the_default_recipe_logs_to_train_only(trained_run):
    log_dir = trained_run["run_dir"] / "tensorboard"
    assert (log_dir / "train").is_dir() and not (log_dir / "validation").exists()
    assert [s for s, _ in read_scalars(log_dir / "train")["epoch_loss"]] == [1]


def test_tensorboard_serves_the_runs_scalars(fast_run):
    port = free_port()
    logdir = fast_run.parent
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base, run = f"http://127.0.0.1:{port}", f"{fast_run.name}/tensorboard/train"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if run in requests.get(f"{base}/data/runs", timeout=2).json():
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "TensorBoard did not list the run in 90 s"
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            time.sleep(1)
        reply = requests.get(
            f"{base}/data/plugin/scalars/scalars",
            params={"run": run, "tag": "epoch_loss"},
            timeout=10,
        )
        reply.raise_for_status()
        served = [(step, value) for _, step, value in reply.json()]
    finally:
        server.terminate()
        server.wait(timeout=30)
    history = report_of(fast_run)["training"]["history"]
    assert [s for s, _ in served] == [e["epoch"] for e in history]
    assert [v for _, v in served] == pytest.approx([e["loss"] for e in history], rel=1e-6)
