"""The PNG pictures evaluate's report.md embeds: confusion matrix, per-class F1, the validation
curve, and actual against predicted for regression.

matplotlib's Agg backend (a bare Figure, no pyplot: no display, no global state), 100 dpi, small
figures (tens of kB: they are kept in git, `cache: false`, so the report renders on GitHub). The
bytes are reproducible: no creation time or software version in the PNG metadata, fixed styles
and the font matplotlib ships, so a rerun on the same numbers writes the same files and git sees
no change.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bertfit.reporting import atomic_file

DPI = 100
STYLE = {
    "font.family": "DejaVu Sans",  # the font matplotlib ships: the same glyphs everywhere
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "bertfit",
}


def save_png(fig: Figure, path: Path) -> Path:
    """Write the figure atomically (temp file, then rename) without time or version metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    with atomic_file(path) as f:
        f.write(buf.getvalue())
    return path


def confusion_png(path: Path, confusion: pd.DataFrame, task: str) -> Path:
    """The confusion matrix (rows actual, columns predicted) with counts and the class names."""
    counts = confusion.to_numpy()
    n = len(confusion)
    side = min(3.0 + 0.45 * n, 9.0)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(side + 1.0, side), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(counts, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(n), [str(c) for c in confusion.columns], rotation=45, ha="right")
        ax.set_yticks(range(n), [str(c) for c in confusion.index])
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"{task}: confusion matrix (test)")
        if n <= 20:  # counts in the cells while they stay readable
            high = counts.max() / 2 if counts.size else 0
            for i, j in np.ndindex(counts.shape):
                color = "white" if counts[i, j] > high else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color)
        return save_png(fig, path)


def per_class_f1_png(path: Path, per_class: Mapping[str, Mapping[str, float]], task: str) -> Path:
    """One horizontal bar per class: its F1 on the test split, with its support."""
    names = list(per_class)
    f1 = [per_class[c]["f1"] for c in names]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.5, 1.2 + 0.35 * len(names)), layout="constrained")
        ax = fig.subplots()
        ax.barh(range(len(names)), f1, color="#4c72b0")
        ax.set_yticks(range(len(names)), [str(c) for c in names])
        ax.invert_yaxis()  # the first class on top, as in the table
        ax.set_xlim(0, 1.12)
        ax.set_xlabel("F1")
        for i, c in enumerate(names):
            ax.text(f1[i] + 0.01, i, f"{f1[i]:.3f} (n={per_class[c]['support']:g})", va="center")
        ax.set_title(f"{task}: F1 per class (test)")
        return save_png(fig, path)


def validation_curve_png(path: Path, history: pd.DataFrame, metric: str, x: str, task: str) -> Path:
    """finetune's validation metric at each evaluation; where it is the selection value, ± its
    standard error as a band (`low`/`high`), and the step whose weights were kept (`kept`)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.5, 3.2), layout="constrained")
        ax = fig.subplots()
        ax.plot(history[x], history[metric], marker="o", color="#4c72b0", label=metric)
        selected = "selection" in history and history["selection"].equals(history[metric])
        if selected and {"low", "high"} <= set(history):
            band = history.dropna(subset=["low", "high"])
            ax.fill_between(
                band[x], band["low"], band["high"], color="#4c72b0", alpha=0.2, label="± 1 s.e."
            )
        if "kept" in history and (history["kept"] == 1).any():
            kept = history[history["kept"] == 1].iloc[0]
            ax.axvline(kept[x], color="#999999", linestyle="--", linewidth=1)
            ax.plot(
                [kept[x]],
                [kept[metric]],
                marker="o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor="#c44e52",
                linestyle="none",
                label=f"kept ({x} {kept[x]:g})",
            )
        ax.legend(loc="best", frameon=False)
        ax.set_xlabel(x)
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        ax.set_title(f"{task}: finetune validation {metric}")
        return save_png(fig, path)


def regression_png(
    path: Path, actual: Sequence[float], predicted: Sequence[float], task: str
) -> Path:
    """Actual against predicted on the test split, with the diagonal a perfect model lies on."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    low = float(min(actual.min(), predicted.min())) if actual.size else 0.0
    high = float(max(actual.max(), predicted.max())) if actual.size else 1.0
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.5, 4.5), layout="constrained")
        ax = fig.subplots()
        ax.plot([low, high], [low, high], color="#999999", linewidth=1)
        ax.scatter(actual, predicted, s=8, alpha=0.5, color="#4c72b0", linewidths=0)
        ax.set_xlabel("actual")
        ax.set_ylabel("predicted")
        ax.set_title(f"{task}: actual vs predicted (test)")
        return save_png(fig, path)


def reliability_png(path: Path, calibration: Mapping[str, Any], task: str) -> Path:
    """The reliability diagram: per confidence bin, how often the prediction is right, before
    and after temperature scaling, against the diagonal of perfect calibration."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.5, 3.6), layout="constrained")
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="calibrated")
        shown = (
            ("bins_uncalibrated", "ece_uncalibrated", "raw softmax", "#c44e52"),
            ("bins", "ece", f"T = {calibration['temperature']:.2f}", "#4c72b0"),
        )
        for bins_key, ece_key, name, color in shown:
            bins = [b for b in calibration[bins_key] if b["count"]]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                color=color,
                label=f"{name} (ECE {calibration[ece_key]:.3f})",
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("mean confidence in the bin (10 equal-width bins)")
        ax.set_ylabel("share right in the bin")
        ax.legend(loc="upper left")
        ax.set_title(f"{task}: reliability on the test split")
        return save_png(fig, path)
