"""The model card in every export, in the sections of Model Cards (Mitchell et al., 2019); its
limits, measured on the test set shifted or inverted, show what happens off MNIST's distribution."""

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from job.export import contract as c
from job.export.signatures import serving_functions
from job.files import write_atomic, write_json_atomic

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
    """Images moved ``pixels`` (1 or more) right and down; the edge that moves in is black."""
    return np.pad(images, ((0, 0), (pixels, 0), (pixels, 0)))[:, :-pixels, :-pixels]


CONDITIONS = (
    ("the test set as it is", lambda x: x),
    ("shifted 2 pixels right and 2 down", lambda x: shift(x, 2)),
    ("shifted 4 pixels right and 4 down", lambda x: shift(x, 4)),
    ("inverted: dark digits on a light background", lambda x: 255 - x),
)


def measure_limits(model, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Accuracy on the test images (uint8 [N, 28, 28]) under each condition, answered by the
    serving_default signature this export holds: its scaling and its checks included."""
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
    """The card's facts from a run's report (or the summary the pipeline builds before it);
    ``limits`` from ``measure_limits``, or None and ``limits_note`` saying why."""
    config, data, model, test = (run.get(key) or {} for key in ("config", "data", "model", "test"))
    train, environment = config.get("train") or {}, run.get("environment") or {}
    return {
        "schema": "mnist-job/model-card/1",
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
                {"name": name, "input": f"{tensor}: {spec}", "outputs": c.SIGNATURE_OUTPUTS}
                for name, tensor, spec in c.SIGNATURES
            ],
            "max_batch": c.MAX_BATCH,
            "refused": c.REFUSED,
            "alpha_rule": c.ALPHA_RULE,
            "examples": c.query_examples(None),
        },
    }


# The Markdown card: the card's facts (values from card_markdown) in its sections, for people.
MARKDOWN = """\
# Model card: {details[name]}

## Model details

- {details[description]}; trained {details[trained_utc]}
- Layers: {layers}; {details[parameters]} parameters
- Recipe `{details[recipe]}`, {details[epochs]} epochs at batch {details[batch_size]}, \
seed {details[seed]}; TensorFlow {details[tensorflow]}, Keras {details[keras]}
- Run: `{details[run_dir]}`

## Intended use

- Primary use: {use[primary_use]}.
- Input: {use[input]}.

Out of scope:

{out_of_scope}

## Training data

- {data[train_examples]} images from `{data[source]}` ({exact}); \
{data[validation_examples]} held out for validation
- sha256 of the arrays: `{data[sha256]}`

## Evaluation

Data: {evaluation[data]}. Accuracy **{evaluation[accuracy]}**, loss {evaluation[loss]}, \
macro precision {evaluation[macro_precision]}, macro recall {evaluation[macro_recall]}.

{per_class}

## Quantitative limits

{limits}

## Caveats and recommendations

- MNIST's writers are American Census Bureau employees and high-school students; \
other hands and scripts are not evaluated.
- Confidence is a softmax probability, not a calibrated one: check the limits above \
before trusting it off MNIST's distribution.

## How to query it

Model name `{query[model_name]}` on TensorFlow Serving; every signature takes at most \
{query[max_batch]} inputs per request.

{signatures}

Refused with InvalidArgument (HTTP 400) before anything is decoded: {refused}. \
And {query[alpha_rule]}.

```sh
{query[examples]}
```
"""


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "—" if value is None else str(value)


def _table(header: str, rows: list[dict], keys: tuple[str, ...]) -> str:
    lines = [f"| {header} |", "|" + " --- |" * len(keys)]
    lines += [f"| {' | '.join(_value(row[key]) for key in keys)} |" for row in rows]
    return "\n".join(lines)


def card_markdown(card: dict) -> str:
    """The card in MARKDOWN's sections: numbers to 4 places, a missing fact as a dash."""
    details, data, evaluation = card["model_details"], card["training_data"], card["evaluation"]
    use, query, limits = card["intended_use"], card["how_to_query"], card["quantitative_limits"]
    if limits:
        limits = (
            "Accuracy on the test set changed as below, measured through the `serving_default` "
            "signature when this model was exported:\n\n"
            + _table("condition | images | accuracy", limits, ("condition", "images", "accuracy"))
        )
    else:
        limits = f"Not measured: {card['quantitative_limits_note'] or 'no test data'}."
    signatures = [{**s, "name": f"`{s['name']}`"} for s in query["signatures"]]
    return MARKDOWN.format(
        details={key: _value(value) for key, value in details.items()},
        layers=", ".join(details["architecture"] or []) or "—",
        use=use,
        out_of_scope="\n".join(f"- {item}" for item in use["out_of_scope"]),
        data={key: _value(value) for key, value in data.items()},
        exact="byte-exact original MNIST" if data["canonical_mnist"] else "not the original MNIST",
        evaluation={key: _value(value) for key, value in evaluation.items()},
        per_class=_table(
            "digit | precision | recall | F1 | support",
            evaluation["per_class"],
            ("digit", "precision", "recall", "f1", "support"),
        ),
        limits=limits,
        query=query,
        signatures=_table("signature | input | outputs", signatures, ("name", "input", "outputs")),
        refused="; ".join(query["refused"]),
    )


def write_card(folder: Path, card: dict) -> None:
    """Write the card as JSON and Markdown into ``folder`` (assets.extra), atomically."""
    write_json_atomic(folder / c.CARD_JSON, card)
    text = card_markdown(card)
    write_atomic(folder / c.CARD_MARKDOWN, lambda f: f.write(text.encode()))
