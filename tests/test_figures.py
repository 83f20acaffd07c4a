"""evaluate's pictures (bertfit.figures) and how report.md embeds them (bertfit.evaluation)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from PIL import Image

from bertfit.data.encoding import Preprocessing
from bertfit.evaluation import curve_axes, draw_figures, finetune_history, write_report
from bertfit.figures import confusion_png
from bertfit.training.live import LIVE_DIR, LiveLog, empty_log

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
CONFUSION = pd.DataFrame(
    [[40, 1, 2, 0, 3], [0, 30, 1, 0, 1], [2, 0, 35, 0, 1], [0, 0, 0, 45, 0], [3, 1, 0, 0, 33]],
    index=LABELS,
    columns=LABELS,
)
PER_CLASS = {
    c: {"precision": 0.9, "recall": 0.8, "f1": 0.85 - 0.05 * i, "support": 40}
    for i, c in enumerate(LABELS)
}
HISTORY = pd.DataFrame(
    {
        "step": [10, 20, 30],
        "epoch": [1.0, 2.0, 3.0],
        "loss": [0.9, 0.6, 0.5],
        "accuracy": [0.6, 0.75, 0.8],
        "accuracy_se": [0.02, 0.02, 0.02],
    }
)


def write_history(report_dir: Path, history: pd.DataFrame, kept_step: int = 20) -> None:
    """The history as finetune's LiveLog writes it (training.live: curves/validation.json)."""
    live = LiveLog(report_dir / LIVE_DIR, "finetune", selected_on="accuracy")
    live.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, log_history=[]), None)
    for row in history.to_dict("records"):
        live.record(int(row["step"]), {f"eval_{k}": v for k, v in row.items() if k != "step"})
    live.end(kept_step)


def task(metric: str = "accuracy") -> SimpleNamespace:
    return SimpleNamespace(name="bbc", metric=metric)


def test_pictures_are_small_reproducible_pngs(tmp_path: Path) -> None:
    first = confusion_png(tmp_path / "a.png", CONFUSION, "bbc").read_bytes()
    again = confusion_png(tmp_path / "b.png", CONFUSION, "bbc").read_bytes()
    assert first == again  # a rerun on the same numbers leaves git nothing to commit
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and len(first) < 100_000
    assert b"Software" not in first and b"matplotlib" not in first.lower()
    with Image.open(tmp_path / "a.png") as image:
        assert 300 <= image.width <= 1000 and 300 <= image.height <= 1000


def test_finetune_history_is_read_from_the_report_folder_or_is_none(tmp_path: Path) -> None:
    assert finetune_history(tmp_path) is None
    write_history(tmp_path, HISTORY)
    history = finetune_history(tmp_path)
    expected = HISTORY[["step", "accuracy", "loss"]]
    pd.testing.assert_frame_equal(history[expected.columns], expected, check_dtype=False)
    # the selection value's band (± its standard error), and the kept step
    assert history["low"].tolist() == pytest.approx([0.58, 0.73, 0.78])
    assert history["high"].tolist() == pytest.approx([0.62, 0.77, 0.82])
    assert history["kept"].tolist() == [0, 1, 0]
    assert "accuracy_se" not in history and "epoch" not in history
    other = tmp_path / "empty"
    empty_log(other / LIVE_DIR, "finetune", ["validation/accuracy"])
    assert finetune_history(other) is None  # a run that did not train: no rows


def test_the_curve_shows_the_task_metric_against_the_step() -> None:
    assert curve_axes(HISTORY, "accuracy") == ("step", "accuracy")
    assert curve_axes(HISTORY, "mcc") == ("step", "loss")  # not recorded: the first metric
    assert curve_axes(HISTORY.drop(columns="step"), "accuracy") == ("epoch", "accuracy")


def report(tmp_path: Path, figures: dict[str, str], confusion: pd.DataFrame | None) -> str:
    prep = Preprocessing(max_seq_length=128, truncation="head_tail", head_tokens=32)
    metrics = {"metric": "accuracy", "accuracy": 0.8}
    path = tmp_path / "report.md"
    write_report(
        path, "bbc", Path("models/finetune"), prep, 10, metrics, PER_CLASS, confusion, figures
    )
    return path.read_text(encoding="utf-8")


def test_classification_report_embeds_its_pictures(tmp_path: Path) -> None:
    ft = tmp_path / "finetune"
    ft.mkdir()
    write_history(ft, HISTORY)
    figures_dir = tmp_path / "figures"
    figures_dir.mkdir()
    (figures_dir / "actual_vs_predicted.png").write_bytes(b"stale")
    drawn = draw_figures(figures_dir, task(), PER_CLASS, CONFUSION, [], [], ft)
    assert sorted(p.name for p in figures_dir.iterdir()) == [
        "confusion.png",
        "per_class_f1.png",
        "validation.png",
    ]
    text = report(tmp_path, drawn, CONFUSION)
    for name in ("confusion.png", "per_class_f1.png", "validation.png"):
        assert f"(figures/{name})" in text
    assert text.index("per_class_f1.png") < text.index("## Confusion") < text.index("confusion.png")


def test_a_missing_history_is_said_in_the_report_not_an_error(tmp_path: Path) -> None:
    drawn = draw_figures(
        tmp_path / "figures", task(), PER_CLASS, CONFUSION, [], [], tmp_path / "no"
    )
    assert "validation" not in drawn
    text = report(tmp_path, drawn, CONFUSION)
    assert f"No finetune validation history in `{tmp_path / 'no'}`." in text


def test_regression_draws_actual_against_predicted(tmp_path: Path) -> None:
    actual, predicted = [1.0, 2.0, 3.0, 4.0], [1.2, 1.9, 3.3, 3.6]
    drawn = draw_figures(tmp_path / "figures", task("pearson"), {}, None, actual, predicted, None)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["actual_vs_predicted.png"]
    text = report(tmp_path, drawn, None)
    assert "(figures/actual_vs_predicted.png)" in text and "## Per class" not in text
    assert "No finetune validation history" in text


@pytest.mark.parametrize("n", [2, 30])
def test_confusion_size_follows_the_number_of_classes(tmp_path: Path, n: int) -> None:
    labels = [f"class_{i}" for i in range(n)]
    matrix = pd.DataFrame(
        [[i + j for j in range(n)] for i in range(n)], index=labels, columns=labels
    )
    with Image.open(confusion_png(tmp_path / "c.png", matrix, "t")) as image:
        assert image.width <= 1000 and image.height <= 1000
