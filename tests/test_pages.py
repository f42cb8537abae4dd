"""The run page, the sweep page and the model card: structure, embedded images, escaping,
old reports, and the commands that write and print them."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from job import pages
from job.cli import main
from job.export import model_card
from serving.cli import main as serving_main

FIGURES = ["accuracy.png", "loss.png", "predictions.png", "confusion_matrix.png"]
RUN_SECTIONS = [
    "Learning curves",
    "Four test predictions",
    "Confusion matrix",
    "Per digit",
    "Export",
    "Configuration",
    "Environment",
]


class PageParser(HTMLParser):
    """The tags, headings, image sources and text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.images, self.headings, self.text, self.meta = [], [], [], [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs)
        if tag == "meta":
            self.meta.append(attrs)
        self._in_heading = tag in ("h1", "h2")

    def handle_endtag(self, tag):
        self._in_heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.headings.append(data)


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def decoded_images(parser: PageParser) -> list[Image.Image]:
    """Every image on the page, decoded from its data URI (fails on anything else)."""
    images = []
    for attrs in parser.images:
        prefix, payload = attrs["src"].split(",", 1)
        assert prefix == "data:image/png;base64", attrs["src"][:40]
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
        images.append(image)
        assert attrs.get("alt")
    return images


def assert_self_contained(text: str, parser: PageParser) -> None:
    assert text.startswith("<!DOCTYPE html>")
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "http://" not in text.split("<body>")[0] and "https://" not in text
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in parser.meta
    assert "@media print" in text


def png(width=60, height=40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def full_report() -> dict:
    per_class = [
        {"digit": d, "precision": 0.99, "recall": 0.98, "f1": 0.985, "support": 1000}
        for d in range(10)
    ]
    return {
        "schema_version": 1,
        "created_utc": "2026-12-03T12:00:00Z",
        "command": "job train --seed 7 <script>alert(1)</script>",
        "config": {"run_dir": "runs/exp1", "train": {"recipe": "fast", "seed": 7}},
        "environment": {"platform": "Linux", "device": {"used": "cpu"}, "tensorflow": "2.21.0"},
        "data": {"source": "cache", "sha256": "ab" * 32, "train_examples": 60000},
        "model": {"parameters": 105306, "layers": ["Conv2D", "Dense"]},
        "distribution": {"replicas": 1},
        "training": {"history": [{"epoch": 1}, {"epoch": 2}]},
        "test": {"accuracy": 0.98765, "loss": 0.0412, "per_class": per_class},
        "timings": {"train_seconds": 21.7, "total_seconds": 95.0},
        "artifacts": {"export": "models/mnist/3"},
        "blessing": {"blessed": True, "reason": None},
    }


def test_run_page_holds_the_whole_run_self_contained():
    text = pages.run_page(full_report(), {name: png() for name in FIGURES})
    parser = parse(text)
    assert_self_contained(text, parser)
    assert parser.headings[0] == "MNIST run: exp1"
    assert parser.headings[1:] == RUN_SECTIONS
    assert len(decoded_images(parser)) == 4
    body = "".join(parser.text)
    for fact in ("0.9877", "0.0412", "fast", "ab" * 32, "2026-12-03T12:00:00Z", "21.7 s"):
        assert fact in body
    assert "Version 3" in body and "/v1/models/mnist/versions/3:predict" in body
    assert "<script>alert(1)</script>" not in text  # escaped, shown as text
    assert "<script>alert(1)</script>" in body


def test_an_old_report_without_newer_fields_still_renders():
    old = {
        "schema_version": 1,
        "config": {"train": {"recipe": "default", "batch_size": 32, "seed": 1}},
        "test": {"accuracy": 0.98, "loss": 0.05},
        "_path": "runs/old/metrics.json",
    }
    text = pages.run_page(old, {"accuracy.png": png()})
    parser = parse(text)
    assert parser.headings[0] == "MNIST run: old"
    assert len(decoded_images(parser)) == 1
    body = "".join(parser.text)
    assert "Loss vs epochs: no figure in this run." in body
    assert "No per-class figures in this report." in body
    assert "No SavedModel version was written" in body


@pytest.mark.parametrize(
    ("values", "strip"),
    [([0.98, 0.99], "[o  |  o] 2 runs"), ([0.97, 0.97], "[|      ] 2 runs")],
)
def test_spread_text_puts_each_run_and_the_mean_on_one_scale(values, strip):
    import pandas as pd

    runs = pd.DataFrame({"recipe": ["fast"] * len(values), "test_acc": values})
    lines = pages.spread_text(runs, ["recipe"], width=7).splitlines()
    assert lines[1] == f"recipe=fast {strip}"


def write_report(path: Path, seed: int, accuracy: float, recipe: str = "default") -> None:
    """An old, minimal report: only what the run table reads."""
    path.mkdir(parents=True)
    report = {
        "schema_version": 1,
        "config": {"train": {"recipe": recipe, "batch_size": 32, "seed": seed}},
        "training": {"history": [{"epoch": 1}]},
        "environment": {"device": {"used": "cpu"}},
        "distribution": {"replicas": 1},
        "test": {"accuracy": accuracy, "loss": 0.05},
        "timings": {"median_epoch_seconds": 1.0, "examples_per_second": 6e4, "train_seconds": 9},
        "data": {"source": "cache", "train_examples": 60000},
    }
    (path / "metrics.json").write_text(json.dumps(report))


@pytest.fixture
def sweep(tmp_path) -> list[str]:
    for seed, accuracy in ((1, 0.981), (2, 0.985), (3, 0.983)):
        write_report(tmp_path / f"default-{seed}", seed, accuracy)
    for seed, accuracy in ((1, 0.990), (2, 0.992)):
        write_report(tmp_path / f"fast-{seed}", seed, accuracy, recipe="fast")
    return sorted(str(p) for p in tmp_path.iterdir())


@pytest.mark.integration
def test_sweep_page_shows_the_spread_per_group(sweep, tmp_path):
    out = tmp_path / "pages" / "sweep.html"
    args = ["report", *sweep, "--group-by", "recipe", "--format", "html", "--output", out]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    text = out.read_text()
    parser = parse(text)
    assert_self_contained(text, parser)
    assert parser.headings == [
        "MNIST sweep: 5 runs by recipe",
        "Test accuracy per run",
        "Per group",
        "Every run",
    ]
    (spread,) = decoded_images(parser)
    assert spread.width >= 600
    body = "".join(parser.text)
    assert "0.9920" in body and "0.9810" in body  # best and worst
    assert body.count("default-") == 3


@pytest.mark.integration
def test_sweep_markdown_has_the_groups_the_spread_and_every_run(sweep):
    args = ["report", *sweep, "--group-by", "recipe", "--format", "markdown"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("| recipe | runs | test_acc_mean")
    block = text.split("```text\n")[1].split("\n```")[0].splitlines()
    assert block[0] == "test accuracy from 0.9810 (left) to 0.9920 (right)"
    default, fast = block[1:]
    assert default.startswith("recipe=default [o") and default.endswith("3 runs")
    assert fast.startswith("recipe=fast") and fast.endswith("o] 2 runs")
    assert text.count("| default-") == 3 and text.count("| default |") == 4  # 1 group + 3 runs


class BrightnessModel:
    """A stand-in model: predicts digit 1 for bright images and 0 for dark ones."""

    def __call__(self, images, training=False):
        bright = tf.reduce_mean(images, axis=[1, 2, 3]) > 0.5
        return tf.one_hot(tf.cast(bright, tf.int32), 10)


def test_limits_measure_the_model_on_transformed_test_images():
    images = np.zeros((8, 28, 28), np.uint8)
    images[:, 10:18, 10:18] = 255  # dark images with a light square: "0"
    limits = model_card.measure_limits(BrightnessModel(), images, np.zeros(8, np.int64))
    accuracy = {row["condition"]: row["accuracy"] for row in limits}
    assert accuracy["the test set as it is"] == 1.0
    assert accuracy["inverted: dark digits on a light background"] == 0.0
    assert {row["images"] for row in limits} == {8}
    shifted = model_card.shift(images, 4)
    assert shifted[:, 14:22, 14:22].min() == 255 and shifted[:, :14, :14].max() == 0


def test_model_card_follows_the_model_card_sections():
    limits = [{"condition": "shifted", "images": 10, "accuracy": 0.5}]
    card = model_card.build_card(full_report(), limits)
    json.dumps(card)  # plain data
    text = model_card.card_markdown(card)
    sections = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert sections == [
        "Model details",
        "Intended use",
        "Training data",
        "Evaluation",
        "Quantitative limits",
        "Caveats and recommendations",
        "How to query it",
    ]
    assert "ab" * 32 in text and "| shifted | 10 | 0.5000 |" in text
    assert "| 9 | 0.9900 | 0.9800 | 0.9850 | 1000 |" in text
    assert "light digit on a dark background" in text
    assert "`predict_image`" in text
    unmeasured = model_card.card_markdown(model_card.build_card({}, None, "no data"))
    assert "Not measured: no data." in unmeasured


@pytest.mark.integration
def test_train_writes_the_run_page_and_the_export_carries_a_model_card(tmp_path, synthetic_npz):
    run_dir, export_dir = tmp_path / "run", tmp_path / "models"
    args = ["train", "--data", synthetic_npz, "--epochs", "1", "--output-dir", run_dir]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--export-dir", export_dir]])
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "metrics.json").read_text())
    parser = parse((run_dir / pages.PAGE_FILENAME).read_text())
    assert len(decoded_images(parser)) == 4
    assert f"{report['test']['accuracy']:.4f}" in "".join(parser.text)

    card = json.loads((export_dir / "1" / "assets.extra" / "model_card.json").read_text())
    as_is = card["quantitative_limits"][0]
    assert as_is["condition"] == "the test set as it is" and as_is["images"] == 200
    assert as_is["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=0.01)
    assert card["training_data"]["sha256"] == report["data"]["sha256"]

    shown = CliRunner().invoke(serving_main, ["card", str(export_dir)])  # newest version
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("# Model card: mnist")
    assert "## Quantitative limits" in shown.output


def test_serving_card_without_a_card_is_one_line(tmp_path):
    (tmp_path / "1").mkdir()
    result = CliRunner().invoke(serving_main, ["card", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"error: {tmp_path / '1'}: no model card (model_card.md missing)\n"


@pytest.mark.integration
def test_the_export_command_writes_a_card_that_says_when_limits_were_not_measured(
    trained_run, tmp_path
):
    measured = json.loads(
        (trained_run["version_dir"] / "assets.extra" / "model_card.json").read_text()
    )
    assert [row["images"] for row in measured["quantitative_limits"]] == [10_000] * 4
    args = ["export", "--run", trained_run["run_dir"], "--export-dir", tmp_path / "models"]
    empty = ["--no-gate", "--cache-dir", tmp_path / "empty"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, *empty]])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "models" / "1" / "assets.extra" / "model_card.md").read_text()
    assert f"Not measured: no verified MNIST in {tmp_path / 'empty'}." in card
    assert not (tmp_path / "empty").exists()
