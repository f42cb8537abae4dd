"""The model card written into every export: ``assets.extra/model_card.md`` for people and
``assets.extra/model_card.json`` for programs, in the sections of Google's Model Cards
(Mitchell et al., 2019): model details, intended use, training data, evaluation, quantitative
limits, caveats, and how to query the served model.

The limits are measured here, at export time, on the MNIST test set with the digits shifted
or inverted: a few predictions of the trained model, so a reader knows what happens off the
training distribution.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from job.export import contract as c
from job.files import write_atomic, write_json_atomic

CARD_MARKDOWN = "model_card.md"  # under assets.extra/
CARD_JSON = "model_card.json"
CARD_SCHEMA = "mnist-job/model-card/1"
DATA_FIELDS = ("source", "sha256", "canonical_mnist", "train_examples", "validation_examples")

INPUT = (
    "one handwritten digit 0-9 as a 28x28 grayscale image, centred by its centre of mass in "
    "a 20x20 box as MNIST is, light digit on a dark background, pixels 0..255"
)
OUT_OF_SCOPE = [
    "dark digits on light paper (invert them first: `python -m serving predict --invert`)",
    "digits that are not centred, cropped or far from 28x28 (see the limits below)",
    "several digits, letters, or anything that is not a digit: the model always answers one "
    "of 0-9, with no 'none of these' class",
    "decisions about people (identity, grading, finance) without a human check",
]


def shift(images: np.ndarray, pixels: int) -> np.ndarray:
    """Images moved ``pixels`` right and down; the edge that moves in is black."""
    moved = np.zeros_like(images)
    moved[:, pixels:, pixels:] = images[:, : images.shape[1] - pixels, : images.shape[2] - pixels]
    return moved


CONDITIONS = (
    ("the test set as it is", lambda x: x),
    ("shifted 2 pixels right and 2 down", lambda x: shift(x, 2)),
    ("shifted 4 pixels right and 4 down", lambda x: shift(x, 4)),
    ("inverted: dark digits on a light background", lambda x: 255 - x),
)


def measure_limits(model, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Accuracy on the test images (uint8 [N, 28, 28]) under each condition, answered by the
    serving_default signature this export holds: its scaling and its checks included."""
    # TensorFlow loads only for measuring: `serving card` reads cards without it.
    from job.export.signatures import serving_functions

    serve = serving_functions(model)[c.SIGNATURE_PIXELS]
    limits = []
    for condition, transform in CONDITIONS:
        pixels = transform(np.asarray(images, np.uint8))
        batches = range(0, len(pixels), c.MAX_BATCH)
        digits = [serve(pixels[i : i + c.MAX_BATCH])[c.OUTPUT_DIGIT].numpy() for i in batches]
        accuracy = float(np.mean(np.concatenate(digits) == np.asarray(labels)))
        limits.append({"condition": condition, "images": len(labels), "accuracy": accuracy})
    return limits


def build_card(run: dict, limits: list[dict] | None, limits_note: str | None = None) -> dict:
    """The card's facts from a run's report (or the summary the pipeline builds before it).

    Args:
        run: a dict with the report's ``config``, ``data``, ``model``, ``test`` and, where
            present, ``environment``, ``training`` and ``created_utc``.
        limits: ``measure_limits``'s answer, or None when it could not be measured.
        limits_note: why the limits are missing, when they are.
    """
    config, data, model, test = (run.get(key) or {} for key in ("config", "data", "model", "test"))
    train, environment = config.get("train") or {}, run.get("environment") or {}
    return {
        "schema": CARD_SCHEMA,
        "model_details": {
            "name": c.MODEL_NAME,
            "description": "The seed notebook's MNIST CNN, trained by mnist-job",
            "architecture": model.get("layers"),
            "parameters": model.get("parameters"),
            "recipe": train.get("recipe"),
            "epochs": len((run.get("training") or {}).get("history") or []) or train.get("epochs"),
            "batch_size": train.get("batch_size"),
            "seed": train.get("seed"),
            "tensorflow": environment.get("tensorflow"),
            "keras": environment.get("keras"),
            "trained_utc": run.get("created_utc")
            or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run_dir": config.get("run_dir"),
        },
        "intended_use": {
            "primary_use": "classifying single handwritten digits like MNIST's",
            "input": INPUT,
            "out_of_scope": OUT_OF_SCOPE,
        },
        "training_data": {key: data.get(key) for key in DATA_FIELDS},
        "evaluation": {
            "data": f"{data.get('test_examples', 'the')} test images of the training data's "
            "source (MNIST's are by writers not in its training set)",
            **{k: test.get(k) for k in ("loss", "accuracy", "macro_precision", "macro_recall")},
            "per_class": test.get("per_class", []),
        },
        "quantitative_limits": limits,
        "quantitative_limits_note": limits_note,
        "how_to_query": {
            "model_name": c.MODEL_NAME,
            "signatures": [
                {"name": name, "input": inputs, "outputs": c.SIGNATURE_OUTPUTS}
                for name, inputs in c.SIGNATURES
            ],
            "max_batch": c.MAX_BATCH,
            "refused": c.REFUSED,
            "alpha_rule": c.ALPHA_RULE,
            "examples": c.query_examples(None),
        },
    }


def _value(value, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def _details(details: dict, data: dict) -> list[str]:
    exact = "byte-exact original MNIST" if data["canonical_mnist"] else "not the original MNIST"
    return [
        "## Model details",
        "",
        f"- {details['description']}; trained {details['trained_utc']}",
        f"- Layers: {', '.join(details['architecture'] or []) or '—'}; "
        f"{_value(details['parameters'])} parameters",
        f"- Recipe `{_value(details['recipe'])}`, {_value(details['epochs'])} epochs at batch "
        f"{_value(details['batch_size'])}, seed {_value(details['seed'])}; TensorFlow "
        f"{_value(details['tensorflow'])}, Keras {_value(details['keras'])}",
        f"- Run: `{_value(details['run_dir'])}`",
        "",
        "## Intended use",
        "",
        f"- Primary use: {details['use']['primary_use']}.",
        f"- Input: {details['use']['input']}.",
        "",
        "Out of scope:",
        "",
        *[f"- {item}" for item in details["use"]["out_of_scope"]],
        "",
        "## Training data",
        "",
        f"- {_value(data['train_examples'])} images from `{_value(data['source'])}` ({exact}); "
        f"{_value(data['validation_examples'])} held out for validation",
        f"- sha256 of the arrays: `{_value(data['sha256'])}`",
    ]


def _evaluation(evaluation: dict, limits: list[dict] | None, note: str | None) -> list[str]:
    lines = [
        "## Evaluation",
        "",
        f"Data: {evaluation['data']}. Accuracy **{_value(evaluation['accuracy'])}**, loss "
        f"{_value(evaluation['loss'])}, macro precision {_value(evaluation['macro_precision'])}, "
        f"macro recall {_value(evaluation['macro_recall'])}.",
        "",
        "| digit | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {row['digit']} | {_value(row['precision'])} | {_value(row['recall'])} | "
            f"{_value(row['f1'])} | {row['support']} |"
            for row in evaluation["per_class"]
        ],
        "",
        "## Quantitative limits",
        "",
    ]
    if not limits:
        return [*lines, f"Not measured: {note or 'no test data'}."]
    return [
        *lines,
        "Accuracy on the test set changed as below, measured through the `serving_default` "
        "signature when this model was exported:",
        "",
        "| condition | images | accuracy |",
        "| --- | --- | --- |",
        *[f"| {r['condition']} | {r['images']} | {_value(r['accuracy'])} |" for r in limits],
    ]


def _querying(query: dict) -> list[str]:
    return [
        "## Caveats and recommendations",
        "",
        "- MNIST's writers are American Census Bureau employees and high-school students; "
        "other hands and scripts are not evaluated.",
        "- Confidence is a softmax probability, not a calibrated one: check the limits above "
        "before trusting it off MNIST's distribution.",
        "",
        "## How to query it",
        "",
        f"Model name `{query['model_name']}` on TensorFlow Serving; every signature takes at "
        f"most {query['max_batch']} inputs per request.",
        "",
        "| signature | input | outputs |",
        "| --- | --- | --- |",
        *[f"| `{s['name']}` | {s['input']} | {s['outputs']} |" for s in query["signatures"]],
        "",
        f"Refused with InvalidArgument (HTTP 400) before anything is decoded: "
        f"{'; '.join(query['refused'])}. And {query['alpha_rule']}.",
        "",
        "```sh",
        query["examples"],
        "```",
        "",
    ]


def card_markdown(card: dict) -> str:
    """The card as Markdown, section by section."""
    details = {**card["model_details"], "use": card["intended_use"]}
    return "\n".join(
        [
            f"# Model card: {details['name']}",
            "",
            *_details(details, card["training_data"]),
            "",
            *_evaluation(
                card["evaluation"],
                card["quantitative_limits"],
                card["quantitative_limits_note"],
            ),
            "",
            *_querying(card["how_to_query"]),
        ]
    )


def write_card(folder: Path, card: dict) -> None:
    """Write the card as JSON and Markdown into ``folder`` (assets.extra), atomically."""
    write_json_atomic(folder / CARD_JSON, card)
    text = card_markdown(card)
    write_atomic(folder / CARD_MARKDOWN, lambda f: f.write(text.encode()))


def read_card(version_dir: Path, as_json: bool = False) -> str:
    """The card of an export version folder, as Markdown or JSON text.

    Raises:
        FileNotFoundError: the folder has no card.
    """
    extra = version_dir / "assets.extra"
    if as_json:
        return json.dumps(json.loads((extra / CARD_JSON).read_text()), indent=2)
    return (extra / CARD_MARKDOWN).read_text()
