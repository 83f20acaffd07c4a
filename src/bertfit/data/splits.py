"""Clean a raw task, carve the splits its source lacks, and keep test text out of train.

Carved splits are stratified by label and grouped by text: identical texts always land in the same
split, so a duplicate can never put a test example into train. Sources that bring their own splits
may still share texts between them; those rows are removed from train (and counted), because the
reference code's pretraining corpus contained test text (REFERENCE.md, protocol faults).
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from bertfit.data.sources import SPLITS, RawTask
from bertfit.params import SplitSpec

log = logging.getLogger(__name__)


@dataclass
class PreparedTask:
    name: str
    splits: dict[str, pd.DataFrame]  # train / validation / test, columns text[, text_pair], label
    labels: list[str]  # class names in id order; empty for regression
    unlabeled: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # rows removed, by reason
    problem: str = "classification"


def text_key(df: pd.DataFrame) -> pd.Series:
    """The identity of an example's input, for duplicate detection across splits."""
    if "text_pair" in df.columns:
        return df["text"] + "\x1f" + df["text_pair"]
    return df["text"]


def numeric_labels(labels: pd.Series, where: str) -> pd.Series:
    """Regression targets as floats; anything that is not a number is an error."""
    values = pd.to_numeric(labels, errors="coerce")
    bad = labels[values.isna() | ~np.isfinite(values.astype(float))]
    if len(bad):
        raise ValueError(
            f"{where}: a regression task needs numeric labels; {len(bad)} are not, e.g. "
            f"{bad.astype(str).unique()[:3].tolist()}. Fix the label column, or declare the task "
            f"`problem: classification`"
        )
    return values.astype("float64")


# labels that read like a missing value: a class of their own (a class may well be called
# `None`), with a warning (missing_label_spellings); a missing label is a blank cell or null
MISSING_LIKE = ("nan", "null", "none", "na", "n/a")


def drop_missing_labels(
    df: pd.DataFrame, where: str, max_missing_label_ratio: float
) -> tuple[pd.DataFrame, int]:
    """Drop rows without a label (a missing value, or a blank cell), failing when their share
    is above the threshold; a blank CSV cell would otherwise become a class ''."""
    blank = df["label"].astype("string").str.strip().eq("")
    missing = (df["label"].isna() | blank.fillna(False)).to_numpy()
    n_missing = int(missing.sum())
    if n_missing and n_missing / len(df) > max_missing_label_ratio:
        rows = ", ".join(str(i + 1) for i in df.index[missing][:5])
        raise ValueError(
            f"{where}: {n_missing} of {len(df)} rows have no label ({n_missing / len(df):.1%}; "
            f"rows {rows}{', ...' if n_missing > 5 else ''}, 1 = the first data row), above "
            f"collect.max_missing_label_ratio={max_missing_label_ratio}; fill in the labels, or "
            f"raise the threshold to drop them"
        )
    if n_missing:
        log.warning("%s: dropped %d rows without a label", where, n_missing)
    return df.loc[~missing], n_missing


def clean_split(
    df: pd.DataFrame, where: str, max_empty_ratio: float, problem: str = "classification"
) -> tuple[pd.DataFrame, int]:
    """Normalise labels and texts and drop empty texts, failing when there are too many.

    Missing texts (NaN / None) count as empty; rows without a label are already dropped
    (drop_missing_labels)."""
    df = df.copy()
    if problem == "regression":
        df["label"] = numeric_labels(df["label"], where)
    else:
        df["label"] = df["label"].astype(str).str.strip()
    text_cols = [c for c in ("text", "text_pair") if c in df.columns]
    empty = np.zeros(len(df), dtype=bool)
    for col in text_cols:
        df[col] = df[col].fillna("").astype(str)
        empty |= ~df[col].map(has_visible_character).to_numpy(dtype=bool)
    n_empty = int(empty.sum())
    if len(df) == 0:
        raise ValueError(f"{where}: no rows")
    if n_empty / len(df) > max_empty_ratio:
        raise ValueError(
            f"{where}: {n_empty} of {len(df)} texts are empty ({n_empty / len(df):.1%}), above "
            f"collect.max_empty_ratio={max_empty_ratio}; fix the text column mapping or the data"
        )
    if n_empty:
        log.warning(
            "%s: dropped %d empty texts (blank, or only invisible characters such as "
            "zero-width spaces or control characters)",
            where,
            n_empty,
        )
    return df.loc[~empty].reset_index(drop=True), n_empty


def has_visible_character(text: str) -> bool:
    """Whether the text holds anything but white space, control and format characters (a
    text of zero-width spaces encodes to [CLS] [SEP] alone: nothing to learn from)."""
    return any(unicodedata.category(ch)[0] not in "CZ" for ch in text)


def carve(
    df: pd.DataFrame, ratio: float, seed: int, where: str, stratify: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `ratio` of the rows, stratified by label, keeping identical texts together.

    Regression targets are not classes: their splits are random, still grouped by text.
    """
    keys = text_key(df)
    groups = pd.DataFrame({"key": keys, "label": df["label"]}).drop_duplicates("key")
    try:
        _, held = train_test_split(
            groups["key"].to_numpy(),
            test_size=ratio,
            random_state=seed,
            stratify=groups["label"].to_numpy() if stratify else None,
        )
    except ValueError as err:
        counts = groups["label"].value_counts().to_dict()
        raise ValueError(
            f"{where}: cannot carve a stratified {ratio:.0%} split ({err}); label counts of "
            f"distinct texts: {counts}. Give the source its own split or drop the rare labels."
        ) from None
    is_held = keys.isin(set(held)).to_numpy()
    return df.loc[~is_held].reset_index(drop=True), df.loc[is_held].reset_index(drop=True)


def subsample(df: pd.DataFrame, n: int, seed: int, stratify: bool, where: str) -> pd.DataFrame:
    """`n` rows of df, drawn with `seed`; stratified by label (each label keeps its share, to
    the row: scikit-learn's allocation) unless the labels are regression targets. The few-shot
    settings (finetune.max_train_samples) draw this way, so 100 of IMDb's reviews are 50 / 50,
    as the paper's are, and not whatever a plain draw gives."""
    if n >= len(df):
        return df
    try:
        picked, _ = train_test_split(
            df, train_size=n, random_state=seed, stratify=df["label"] if stratify else None
        )
    except ValueError as err:
        counts = df["label"].value_counts().to_dict()
        raise ValueError(
            f"{where}: cannot draw a stratified sample of {n} rows ({err}); label counts: "
            f"{counts}. Use at least one row per label, or drop the rare labels."
        ) from None
    return picked.reset_index(drop=True)


def prepare_task(
    raw: RawTask,
    split: SplitSpec | None,
    seed: int,
    max_empty_ratio: float,
    problem: str = "classification",
    max_missing_label_ratio: float = 0.0,
) -> PreparedTask:
    """Clean, split and deduplicate a raw task; `max_missing_label_ratio`'s default fails on any
    missing label, as collect did before the threshold existed."""
    name = raw.name
    classes = problem == "classification"
    if "train" not in raw.splits:
        raise ValueError(f"tasks.{name}: the source gives no train rows")
    counts: dict[str, int] = dict(raw.notes)
    splits = {}
    for s, df in raw.splits.items():
        where = f"tasks.{name} [{s}]" + (f" {raw.files[s]}" if s in raw.files else "")
        df, counts[f"missing_label_removed_{s}"] = drop_missing_labels(
            df, where, max_missing_label_ratio
        )
        splits[s], counts[f"empty_removed_{s}"] = clean_split(df, where, max_empty_ratio, problem)

    missing = [s for s in ("validation", "test") if s not in splits]
    if missing and split is None:
        raise ValueError(
            f"tasks.{name}: the source has no {' or '.join(missing)} split; add "
            f"`split: {{validation_ratio: 0.1, test_ratio: 0.1}}` to the task in the task "
            "catalogue (tasks.yaml)"
        )
    if "test" not in splits:
        splits["train"], splits["test"] = carve(
            splits["train"], split.test_ratio, seed, f"tasks.{name}", classes
        )
    if "validation" not in splits:
        # validation_ratio is a share of all labelled rows; rescale to what is left after test
        left = 1.0 if "test" not in missing else 1.0 - split.test_ratio
        splits["train"], splits["validation"] = carve(
            splits["train"], split.validation_ratio / left, seed, f"tasks.{name}", classes
        )

    held_out = set(text_key(splits["validation"])) | set(text_key(splits["test"]))
    in_held = text_key(splits["train"]).isin(held_out).to_numpy()
    counts["duplicates_removed_from_train"] = int(in_held.sum())
    if in_held.any():
        log.info(
            "tasks.%s: removed %d train rows whose text is also in validation/test",
            name,
            int(in_held.sum()),
        )
        splits["train"] = splits["train"].loc[~in_held].reset_index(drop=True)

    if not classes:
        if len(splits["train"]) == 0:
            raise ValueError(f"tasks.{name}: train has no rows left")
        labels: list[str] = []
    else:
        labels = check_classes(name, splits)

    # drop unlabelled texts that are also labelled examples of validation/test: they must never
    # reach a pretraining corpus (the imdb unlabelled set shares 270 reviews with test)
    unlabeled = [t for t in raw.unlabeled if t.strip() and t not in held_out]
    counts["unlabeled_removed_as_heldout"] = sum(t in held_out for t in raw.unlabeled)
    counts["unlabeled_empty_removed"] = sum(not t.strip() for t in raw.unlabeled)
    return PreparedTask(name, {s: splits[s] for s in SPLITS}, labels, unlabeled, counts, problem)


def check_classes(name: str, splits: dict[str, pd.DataFrame]) -> list[str]:
    """The train classes in id order, after checking validation and test use no others."""
    labels = sorted(splits["train"]["label"].unique())
    if len(labels) < 2:
        raise ValueError(
            f"tasks.{name}: train has a single class {labels}; classification needs at least two. "
            f"Check the label column mapping."
        )
    for s in ("validation", "test"):
        unseen = sorted(set(splits[s]["label"]) - set(labels))
        if unseen:
            raise ValueError(
                f"tasks.{name} [{s}]: labels {unseen} do not occur in train (train labels: "
                f"{labels}); the model could never predict them. Fix the data or merge labels."
            )
        present = sorted(set(splits[s]["label"]))
        if len(present) == 1:
            log.warning(
                "tasks.%s [%s]: every row is %r: a model that always says %r scores 1.0 here, "
                "so %s cannot tell models apart%s. Give the split rows of every class",
                name,
                s,
                present[0],
                present[0],
                "model selection (finetune.metric_for_best_model)"
                if s == "validation"
                else "the test",
                "" if s == "test" else " and picks a step by chance",
            )
        elif len(present) < len(labels):
            log.warning(
                "tasks.%s [%s]: no rows of %s; the metrics there leave those classes out",
                name,
                s,
                sorted(set(labels) - set(present)),
            )
    return labels


def label_spellings(task: PreparedTask) -> dict[str, dict[str, int]]:
    """Labels that may mean one class though spelled apart: the same number (`1`, `1.0`, `01`,
    as a spreadsheet or JSON's numbers leave them), or a spelling of a missing value (`None`,
    `NaN`: a class of its own here). What they are, with row counts over all splits."""
    if not task.labels:
        return {}
    counts = pd.concat([df["label"] for df in task.splits.values()]).value_counts()
    numbers: dict[float, dict[str, int]] = {}
    found: dict[str, dict[str, int]] = {}
    for label, n in counts.items():
        try:
            value = float(label)
        except ValueError:
            value = None
        if value is not None and np.isfinite(value):
            numbers.setdefault(value, {})[label] = int(n)
        if label.lower() in MISSING_LIKE:
            found.setdefault("missing-like", {})[label] = int(n)
    for value, spellings in numbers.items():
        if len(spellings) > 1:
            found[f"the number {value:g}"] = spellings
    return found


def conflicting_texts(task: PreparedTask) -> tuple[int, int, pd.DataFrame]:
    """Texts (pairs) that occur with more than one label over all splits: (texts, rows, a few
    examples with their labels)."""
    if not task.labels:
        return 0, 0, pd.DataFrame()
    rows = pd.concat([pd.DataFrame({"key": text_key(df), "label": df["label"]})
                      for df in task.splits.values()])  # fmt: skip
    labels = rows.groupby("key")["label"].nunique()
    conflicting = labels[labels > 1].index
    hit = rows[rows["key"].isin(set(conflicting))]
    examples = hit.groupby("key")["label"].unique().head(3).reset_index()
    return len(conflicting), len(hit), examples
