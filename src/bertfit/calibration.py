"""Calibrated probabilities: temperature scaling (Guo et al., 2017, "On Calibration of Modern
Neural Networks") and the expected calibration error over equal-width confidence bins.

One temperature T divides a classifier's scores before the softmax; T is fitted on the
validation split by minimising the negative log-likelihood (scipy's bounded scalar search over
log T), so the predicted class never changes, only how sure the probabilities say it is.
Written here because scikit-learn's CalibratedClassifierCV calibrates estimators it fits
itself (sigmoid or isotonic, one-vs-rest), not a fixed network's multi-class scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

BINS = 10  # equal-width confidence bins of the ECE and the reliability diagram
LOG_T_BOUNDS = (-3.0, 3.0)  # T from 0.05 to 20


def probabilities(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each class's probability: the softmax of the scores divided by the temperature."""
    return softmax(np.asarray(scores, dtype=np.float64) / temperature, axis=-1)


def negative_log_likelihood(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    logp = log_softmax(np.asarray(scores, dtype=np.float64) / temperature, axis=-1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of `labels` (class ids) under the scores."""
    labels = np.asarray(labels, dtype=int)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(scores, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
    )
    return float(np.exp(found.x))


def confidence_bins(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per equal-width bin of the top probability: its range, how many predictions fall in it,
    their mean confidence and how many of them are right (empty bins included, count 0)."""
    confidence = probs.max(axis=-1)
    right = probs.argmax(axis=-1) == np.asarray(labels)
    # a confidence of exactly 1.0 belongs to the last bin
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        out.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": n,
                "confidence": float(confidence[members].mean()) if n else None,
                "accuracy": float(right[members].mean()) if n else None,
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Σ over bins of (share of predictions in the bin) × |accuracy − mean confidence|."""
    total = len(labels)
    return float(
        sum(
            b["count"] / total * abs(b["accuracy"] - b["confidence"])
            for b in confidence_bins(probs, labels, bins)
            if b["count"]
        )
    )


def calibration_record(
    scores: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, Any]:
    """ECE before (T = 1) and after scaling, and the bins of both, for a report."""
    before, after = probabilities(scores), probabilities(scores, temperature)
    return {
        "temperature": temperature,
        "ece_uncalibrated": expected_calibration_error(before, labels),
        "ece": expected_calibration_error(after, labels),
        "bins_uncalibrated": confidence_bins(before, labels),
        "bins": confidence_bins(after, labels),
    }
