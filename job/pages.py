"""Pages people read: ``report.html`` for a run, a sweep page (HTML or Markdown) for runs;
self-contained, every text escaped, a dash for what an older report lacks."""

import base64
import html
import json
from pathlib import Path

import pandas as pd

from job.export import contract as c
from job.export.contract import SIGNATURE_OUTPUTS, SIGNATURES, query_examples
from job.files import write_atomic
from job.report import format_table

PAGE_FILENAME = "report.html"
MISSING = "—"

CSS = """
:root { color-scheme: light; --ink: #1b1f24; --muted: #57606a; --rule: #d0d7de; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; padding: 1rem; max-width: 64rem; }
h1 { font-size: 1.6rem; margin: .5rem 0; } h2 { font-size: 1.25rem; margin-top: 2rem;
     border-bottom: 1px solid var(--rule); }
.muted { color: var(--muted); }
.headline { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr));
            gap: .5rem; margin: 1rem 0; }
.headline div { border: 1px solid var(--rule); border-radius: 6px; padding: .5rem .75rem; }
.headline b { display: block; font-size: 1.5rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 1rem; }
figure { margin: 0; } img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--rule); padding: .25rem .6rem; text-align: left;
         vertical-align: top; }
td.num, th.num { text-align: right; }
code, pre { font: .85rem/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
            overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: .75rem; overflow-x: auto; white-space: pre-wrap; }
@media print {
  body { max-width: none; font-size: 10pt; padding: 0; }
  h2 { break-after: avoid; } figure, table, pre { break-inside: avoid; }
  .figures { grid-template-columns: 1fr 1fr; } pre { background: none; border: 1px solid #999; }
}
"""


def page(title: str, body: str) -> str:
    """``title`` is escaped here; ``body`` is HTML already."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
{body}
</body>
</html>
"""


def esc(value) -> str:
    return html.escape(MISSING if value is None else str(value))


def dig(data: dict, path: str, default=None):
    """``data["a"]["b"]`` for ``"a.b"``, or ``default`` where any step is missing."""
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def number(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else MISSING


def figure(png: bytes | None, alt: str, caption: str = "") -> str:
    if not png:
        return f'<p class="muted">{esc(alt)}: no figure in this run.</p>'
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """An HTML table; columns whose index is in ``numeric`` are right-aligned."""

    def cell(tag, i, value):
        align = ' class="num"' if i in numeric else ""
        return f"<{tag}{align}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table_html}</div>'


def flatten(data, prefix: str = "") -> list[list[str]]:
    """Nested dicts as ``[dotted.key, value]`` rows; lists and scalars as JSON text."""
    if isinstance(data, dict) and data:
        return [row for k, v in data.items() for row in flatten(v, f"{prefix}{k}.")]
    text = data if isinstance(data, str) else json.dumps(data)
    return [[prefix.rstrip("."), text]]


def headline(items: list[tuple[str, str]]) -> str:
    cards = "".join(f"<div>{esc(label)}<b>{esc(value)}</b></div>" for label, value in items)
    return f'<div class="headline" id="headline">{cards}</div>'


def duration(seconds) -> str:
    if not isinstance(seconds, int | float):
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def export_section(report: dict) -> str:
    export = dig(report, "artifacts.export")
    blessing = report.get("blessing") or {}
    if not export:
        why = blessing.get("reason") or "the run was trained with --no-export"
        return f"<h2>Export</h2><p>No SavedModel version was written: {esc(why)}.</p>"
    version = Path(export).name
    rows = [[name, f"{tensor}: {spec}", SIGNATURE_OUTPUTS] for name, tensor, spec in SIGNATURES]
    return (
        f"<h2>Export</h2><p>Version <b>{esc(version)}</b> in <code>{esc(export)}</code>, "
        f"model name <code>{esc(c.MODEL_NAME)}</code>; its model card is "
        f"<code>assets.extra/{c.CARD_MARKDOWN}</code>.</p>"
        + table(["signature", "input", "outputs"], rows)
        + f"<p>Query it (TF Serving on ports {c.REST_PORT} and {c.GRPC_PORT}):</p>"
        + f"<pre>{esc(query_examples(version))}</pre>"
    )


def per_class_table(report: dict) -> str:
    rows = [
        [
            row.get("digit"),
            *(number(row.get(k)) for k in ("precision", "recall", "f1")),
            row.get("support"),
        ]
        for row in dig(report, "test.per_class", [])
    ]
    if not rows:
        return '<p class="muted">No per-class figures in this report.</p>'
    return table(["digit", "precision", "recall", "F1", "support"], rows, {0, 1, 2, 3, 4})


def run_title(report: dict) -> str:
    path = report.get("_path") or dig(report, "config.run_dir") or "run"
    name = Path(path).parent.name if path.endswith(".json") else Path(path).name
    return f"MNIST run: {name}"


def run_page(report: dict, figures: dict[str, bytes]) -> str:
    """The run's page from its report and its figures' PNG bytes by file name."""
    sha = dig(report, "data.sha256")
    device = dig(report, "environment.device.used")
    where = ", ".join(
        str(v) for v in (device, dig(report, "environment.platform")) if v is not None
    )
    facts = [
        ("Test accuracy", number(dig(report, "test.accuracy"))),
        ("Test loss", number(dig(report, "test.loss"))),
        ("Recipe", dig(report, "config.train.recipe", MISSING)),
        ("Epochs", len(dig(report, "training.history", [])) or MISSING),
        ("Training time", duration(dig(report, "timings.train_seconds"))),
        ("Whole run", duration(dig(report, "timings.total_seconds"))),
    ]
    body = [
        f"<h1>{esc(run_title(report))}</h1>",
        headline(facts),
        "<p>"
        f"Finished <b>{esc(report.get('created_utc'))}</b> on <b>{esc(where or None)}</b>. "
        f"Data: {esc(dig(report, 'data.source'))}, "
        f"{esc(dig(report, 'data.train_examples'))} training images, sha256 "
        f"<code>{esc(sha)}</code>.</p>",
        f'<p class="muted">Command: <code>{esc(report.get("command"))}</code></p>',
        '<h2>Learning curves</h2><div class="figures">',
        figure(figures.get("accuracy.png"), "Accuracy vs epochs"),
        figure(figures.get("loss.png"), "Loss vs epochs"),
        "</div>",
        "<h2>Four test predictions</h2>",
        figure(
            figures.get("predictions.png"),
            "Four test images and the model's distribution",
            "Green: the prediction is right; red: wrong.",
        ),
        "<h2>Confusion matrix</h2>",
        figure(figures.get("confusion_matrix.png"), "Confusion matrix of the test set"),
        "<h2>Per digit</h2>",
        per_class_table(report),
        export_section(report),
        "<h2>Configuration</h2>",
        table(["setting", "value"], flatten(report.get("config", {}))),
        "<h2>Environment</h2>",
        table(
            ["what", "value"],
            flatten(report.get("environment", {}))
            + flatten({"distribution": report.get("distribution")}),
        ),
    ]
    return page(run_title(report), "\n".join(body))


def write_run_page(path: Path, report: dict, figures: dict[str, bytes]) -> Path:
    text = run_page(report, figures)
    return write_atomic(path, lambda f: f.write(text.encode()))


def frame_table(frame: pd.DataFrame) -> str:
    numeric = {i for i, dtype in enumerate(frame.dtypes) if pd.api.types.is_numeric_dtype(dtype)}
    return table(list(map(str, frame.columns)), frame.values.tolist(), numeric)


def sweep_page(
    runs: pd.DataFrame, groups: pd.DataFrame | None, group_by: list[str], spread_png: bytes
) -> str:
    """The spread per group as a plot, the group summary (when grouped) and every run."""
    title = f"MNIST sweep: {len(runs)} runs" + (f" by {', '.join(group_by)}" if group_by else "")
    body = [
        f"<h1>{esc(title)}</h1>",
        headline(
            [
                ("Runs", len(runs)),
                ("Best test accuracy", number(runs["test_acc"].max())),
                ("Worst test accuracy", number(runs["test_acc"].min())),
            ]
        ),
        "<h2>Test accuracy per run</h2>",
        figure(
            spread_png,
            "Test accuracy of every run, per group",
            "Each dot is a run; the bar is the group's mean.",
        ),
    ]
    if groups is not None:
        body += ["<h2>Per group</h2>", frame_table(groups)]
    body += ["<h2>Every run</h2>", frame_table(runs)]
    return page(title, "\n".join(body))


def spread_text(runs: pd.DataFrame, group_by: list[str], width: int = 40) -> str:
    """The spread per group as text for Markdown: each ``o`` a run, ``|`` the mean, on one
    scale from the lowest to the highest run."""
    low, high = runs["test_acc"].min(), runs["test_acc"].max()
    span = (high - low) or 1.0

    def column(value):
        return round((value - low) / span * (width - 1))

    lines = [f"test accuracy from {low:.4f} (left) to {high:.4f} (right)"]
    labels = []
    for key, group in runs.groupby(group_by, sort=True, dropna=False):
        strip = [" "] * width
        for value in group["test_acc"]:
            strip[column(value)] = "o"
        strip[column(group["test_acc"].mean())] = "|"
        label = " ".join(f"{k}={v}" for k, v in zip(group_by, key, strict=True))
        labels.append((label, "".join(strip), len(group)))
    pad = max(len(label) for label, _, _ in labels)
    lines += [f"{label:<{pad}} [{strip}] {n} runs" for label, strip, n in labels]
    return "\n".join(lines)


def sweep_markdown(runs: pd.DataFrame, groups: pd.DataFrame | None, group_by: list[str]) -> str:
    """The sweep page as Markdown, for GitHub job summaries and pull requests."""
    parts = [format_table(frame, "markdown") for frame in (groups, runs) if frame is not None]
    parts.insert(1, "```text\n" + spread_text(runs, group_by) + "\n```")
    return "\n\n".join(parts)
