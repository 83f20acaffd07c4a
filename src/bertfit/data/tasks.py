"""The Task: one collected task as every later stage sees it, and its on-disk contract.

collect writes a task to `data/tasks/<name>/`: `{train,validation,test}.parquet` (text[,
text_pair], label), `unlabeled.parquet` and `labels.json` (name, domain, problem, metric,
positive label, labels in class-id order; label words and prefix for text-to-text models;
whether the rows are sentence pairs), and `stats.json` (the task's entry of
reports/collect/stats.json: rows, label counts, token lengths, the share over max_seq_length,
the unknown-token share; and the source it came from), which finetune's model card reads.
Multitask, finetune, evaluate, search and the benchmarks read it back with `read_task` and
never look at the files themselves, so adding a field (a prompt template) is a change here only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bertfit.reporting import atomic_file, write_json

LABELS_FILE = "labels.json"
STATS_FILE = "stats.json"


@dataclass(frozen=True)
class Task:
    """What a task is (its labels and how it is judged) and where its splits are."""

    name: str
    labels: list[str]  # class names in id order; empty for regression
    problem: str = "classification"  # classification | regression
    metric: str = "accuracy"  # the task's official metric (metrics.task_metrics key)
    positive_label: str | None = None  # the class F1 is computed for (metric f1)
    domain: str | None = None
    # text-to-text models (models.text2text): the word written for a label (default: its
    # name), and the text put before the input (default "<name>: ", pairs "<name> sentence1: ")
    label_words: dict[str, str] | None = None
    prefix: str | None = None
    # whether its rows are sentence pairs (text, text_pair): models trained on it read two texts
    # (bertfit predict asks for the second). None: not recorded (a labels.json from before)
    sentence_pair: bool | None = None
    task_dir: Path | None = field(default=None, compare=False)

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.labels)

    @property
    def positive_id(self) -> int | None:
        return None if self.positive_label is None else self.labels.index(self.positive_label)

    def words(self) -> list[str]:
        """The label words in class-id order."""
        words = self.label_words or {}
        return [words.get(label, label) for label in self.labels]

    def input_prefix(self, pair: bool = False) -> str:
        if self.prefix is not None:
            return self.prefix
        return f"{self.name} sentence1: " if pair else f"{self.name}: "

    def split(self, name: str) -> pd.DataFrame:
        """One split's rows as collect wrote them."""
        if self.task_dir is None:
            raise ValueError(f"task {self.name} was not read from disk; it has no splits")
        path = self.task_dir / f"{name}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the collect stage for this task first")
        return pd.read_parquet(path)

    def stats(self) -> dict[str, Any]:
        """What collect measured about the task and where it came from (STATS_FILE); empty for
        a task collected before collect wrote it, or one not read from disk."""
        path = self.task_dir / STATS_FILE if self.task_dir is not None else None
        if path is None or not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def info(self) -> dict[str, object]:
        """The labels.json record (and what a model manifest stores about its task)."""
        return {k: v for k, v in asdict(self).items() if k != "task_dir"}


def task_from_info(info: dict[str, object], task_dir: Path | None = None) -> Task:
    known = {k: info[k] for k in Task.__dataclass_fields__ if k in info and k != "task_dir"}
    name = known.pop("name", None) or info.get("task")  # labels.json names it `task`
    return Task(name=str(name), task_dir=task_dir, **known)


def read_task(task_dir: Path) -> Task:
    """The task collect wrote to task_dir."""
    path = task_dir / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the collect stage for this task first")
    info = json.loads(path.read_text(encoding="utf-8"))
    return task_from_info({"name": task_dir.name} | info, task_dir)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as f:
        df.to_parquet(f, index=False)


def write_task(
    task: Task, splits: dict[str, pd.DataFrame], unlabeled: list[str], task_dir: Path
) -> None:
    """collect's side of the contract: the splits, the unlabelled text and labels.json."""
    if task.positive_label is not None and task.positive_label not in task.labels:
        raise ValueError(
            f"tasks.{task.name}.positive_label {task.positive_label!r} is not a label of the "
            f"task ({task.labels})"
        )
    unknown = sorted(set(task.label_words or {}) - set(task.labels))
    if unknown:
        raise ValueError(
            f"tasks.{task.name}.label_words: {unknown} are not labels of the task ({task.labels})"
        )
    for split, df in splits.items():
        write_parquet(df, task_dir / f"{split}.parquet")
    write_parquet(pd.DataFrame({"text": unlabeled}, dtype=str), task_dir / "unlabeled.parquet")
    info = task.info()
    write_json(task_dir / LABELS_FILE, {"task": info.pop("name")} | info)
