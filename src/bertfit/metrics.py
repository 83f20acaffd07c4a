"""Pure metric functions: (labels, predictions) -> dict of floats, computed with scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy, error rate and macro-F1 of integer class predictions."""
    accuracy = float(accuracy_score(labels, predictions))
    return {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def per_class_metrics(
    labels: np.ndarray, predictions: np.ndarray, label_names: list[str]
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support for every class in `label_names` (index = class id)."""
    ids = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    return {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, name in enumerate(label_names)
    }
