"""Pure metrics from labels and predicted probabilities, and the one pass over the test set."""

import numpy as np


def predict_in_batches(model, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities [N, 10] from plain model calls, which run under every strategy."""
    return np.concatenate(
        [
            np.asarray(model(images[i : i + batch_size], training=False), np.float32)
            for i in range(0, len(images), batch_size)
        ]
    )


def cross_entropy(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean sparse categorical cross-entropy, clipped at 1e-7 as Keras clips it."""
    picked = np.clip(y_prob[np.arange(len(y_prob)), np.asarray(y_true, np.int64)], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int):
    """Rows are true digits, columns predicted digits."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support per class; 0.0 where a ratio has no denominator."""
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    return [
        {"digit": d, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for d, (p, r, f, n) in enumerate(zip(precision, recall, f1, support, strict=True))
    ]


def compute_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict:
    """Loss, accuracy, per-class figures and confusion matrix from probabilities [N, 10]."""
    y_pred = np.argmax(y_prob, axis=1)
    matrix = confusion_matrix(y_true, y_pred, y_prob.shape[1])
    per_class = per_class_metrics(matrix)
    return {
        "loss": cross_entropy(y_true, y_prob),
        "accuracy": float(np.mean(y_pred == np.asarray(y_true))),
        "macro_precision": float(np.mean([c["precision"] for c in per_class])),
        "macro_recall": float(np.mean([c["recall"] for c in per_class])),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
