"""Pure metrics."""

import numpy as np
import pytest

from job.evaluate import compute_metrics, confusion_matrix, per_class_metrics


def test_confusion_matrix_counts():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


@pytest.mark.parametrize(
    "y_true, y_pred, precision, recall",
    [
        ([0, 1, 1], [0, 1, 1], [1.0, 1.0], [1.0, 1.0]),
        ([0, 1, 1], [0, 0, 1], [0.5, 1.0], [1.0, 0.5]),
        ([1, 1, 1], [1, 1, 1], [0.0, 1.0], [0.0, 1.0]),  # class 0 absent: 0, not NaN
    ],
)
def test_per_class_precision_and_recall(y_true, y_pred, precision, recall):
    rows = per_class_metrics(confusion_matrix(y_true, y_pred, num_classes=2))
    assert [r["precision"] for r in rows] == pytest.approx(precision)
    assert [r["recall"] for r in rows] == pytest.approx(recall)
    assert sum(r["support"] for r in rows) == len(y_true)


def test_compute_metrics_from_probabilities():
    y_true = np.array([0, 1, 2, 3])
    probs = np.eye(10)[[0, 1, 2, 5]]
    metrics = compute_metrics(y_true, probs)
    assert metrics["accuracy"] == 0.75
    assert metrics["loss"] == pytest.approx(-np.log(1e-7) / 4)  # clipped as Keras clips it
    assert np.array(metrics["confusion_matrix"]).sum() == 4
    assert metrics["per_class"][3]["recall"] == 0.0
    assert metrics["per_class"][5]["precision"] == 0.0
