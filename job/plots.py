"""Figures: functions that take data and return a matplotlib Figure, and one that saves it."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch job: never a window; selecting a backend does no other work

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from job.files import write_atomic  # noqa: E402


def learning_curve_figure(history: pd.DataFrame, metric: str) -> Figure:
    """``metric`` (and ``val_<metric>`` when present) against epochs, from the history frame."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    frame = history.set_index("epoch")
    columns = [c for c in (metric, f"val_{metric}") if c in frame.columns]
    frame[columns].rename(columns={metric: "train", f"val_{metric}": "validation"}).plot(
        ax=ax, marker="o", legend=True
    )
    ax.set(title=f"{metric.capitalize()} vs Epochs", xlabel="Epochs", ylabel=metric.capitalize())
    ax.set_xticks(frame.index)
    ax.grid(alpha=0.3)
    return fig


def predictions_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> Figure:
    """The seed's last cell: each image beside a bar chart of the model's distribution."""
    rows = len(images)
    fig = Figure(figsize=(10, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, width_ratios=[1, 2.5], squeeze=False)
    for i, (image, label, prob) in enumerate(zip(images, labels, probabilities, strict=True)):
        predicted, left, right = int(np.argmax(prob)), axes[i, 0], axes[i, 1]
        left.imshow(np.squeeze(image), cmap="gray_r")
        left.set_axis_off()
        left.set_title(f"Digit {int(label)}")
        bars = right.bar(np.arange(len(prob)), prob, color="tab:blue")
        bars[predicted].set_color("tab:green" if predicted == int(label) else "tab:red")
        right.set(xticks=np.arange(len(prob)), ylim=(0, 1), ylabel="Probability")
        right.set_title(
            f"Categorical distribution. True: {int(label)}, model prediction: {predicted} "
            f"({prob[predicted]:.1%})"
        )
    axes[-1, 1].set_xlabel("Digit")
    return fig


def confusion_matrix_figure(matrix: np.ndarray) -> Figure:
    """Counts per (true, predicted) digit; the diagonal is what the model got right."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.add_subplot()
    shown = ax.imshow(matrix, cmap="Blues", norm=matplotlib.colors.LogNorm(vmin=1))
    fig.colorbar(shown, ax=ax, label="Test images (log scale)")
    n = matrix.shape[0]
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xlabel="Predicted digit",
        ylabel="True digit",
        title=f"Confusion matrix ({matrix.trace()} of {matrix.sum()} correct)",
    )
    threshold = matrix.max() / 4
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            color = "white" if count > threshold else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8, color=color)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    return write_atomic(path, lambda f: f.write(figure_png(fig)))


def save_run_figures(out_dir: Path, history: list[dict], arrays, probabilities, matrix, seed: int):
    """A run's figures: learning curves, four random test predictions, the confusion matrix."""
    frame = pd.DataFrame(history)
    picks = np.random.default_rng(seed).choice(len(arrays.x_test), 4, replace=False)
    figures = {
        "accuracy.png": learning_curve_figure(frame, "accuracy"),
        "loss.png": learning_curve_figure(frame, "loss"),
        "predictions.png": predictions_figure(
            arrays.x_test[picks], arrays.y_test[picks], probabilities[picks]
        ),
        "confusion_matrix.png": confusion_matrix_figure(matrix),
    }
    for name, fig in figures.items():
        save_figure(fig, out_dir / name)
    return list(figures)


def spread_figure(runs: pd.DataFrame, group_by: list[str]) -> Figure:
    """Each run's test accuracy as a dot, a row per group, the group's mean as a bar: the spread."""
    groups = list(runs.groupby(group_by, sort=True, dropna=False))
    fig = Figure(figsize=(7, 1.2 + 0.55 * len(groups)), layout="constrained")
    ax = fig.add_subplot()
    for row, (_, group) in enumerate(groups):
        rows = row + np.linspace(-0.15, 0.15, len(group)) * (len(group) > 1)  # ties stay apart
        ax.scatter(group["test_acc"], rows, s=36, alpha=0.7, color="tab:blue", zorder=3)
        ax.plot(
            [group["test_acc"].mean()] * 2, [row - 0.3, row + 0.3], color="black", lw=2, zorder=4
        )
    # Grouped by a list, pandas names every group by a tuple, even of one column.
    labels = [
        ", ".join(f"{k}={v}" for k, v in zip(group_by, key, strict=True)) + f" ({len(group)})"
        for key, group in groups
    ]
    ax.set_yticks(range(len(groups)), labels)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set(xlabel="Test accuracy", title="Each dot a run; bar: mean")
    ax.grid(axis="x", alpha=0.3)
    return fig


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
