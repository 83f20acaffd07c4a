"""The manifest every bertfit model directory carries: `bertfit_model.json` beside config.json.

It says what the directory holds, so one `load_trained` (models.family) can rebuild any of them
and evaluate, search and prediction never guess from file names: the model family (`encoder` or
`seq2seq`), the head (`none` for a bare encoder, `stock` for the architecture's own
sequence-classification head, `pooled` for models.pooling's features and chunk pooling,
`multitask` for one head per task in `multitask_heads/`, `text2text` for a seq2seq model that
writes label words), the preprocessing the model was
trained with (data.encoding), the task it classifies (data.tasks) or, for multitask, every
task's head, and the stage that wrote it. An adapter (method prompt_tuning or lora) names its
frozen base by a fingerprint of its weights; a multitask prompt-tuning directory lists each
task's adapter folder under `heads`. `recipe` lists the stages that made the directory, oldest
first, with what each ran (base model, corpus, tasks, steps) or why it passed the model through:
each stage copies its input's recipe and adds its own entry, so finetune's model card
(model_card) tells the whole run from the directory it starts from. The weights stay in the
standard files (`model.safetensors`, and the head files named here), so a stock classifier still
loads with `AutoModelForSequenceClassification` and `pipeline("text-classification")`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertfit.data.encoding import Preprocessing
from bertfit.data.tasks import Task, task_from_info
from bertfit.fingerprints import file_md5
from bertfit.reporting import write_json

MANIFEST_FILE = "bertfit_model.json"
CARD_FILE = "README.md"  # the model card (bertfit.model_card): about the model, not part of it
HEADS = ("none", "stock", "pooled", "multitask", "text2text")


@dataclass(frozen=True)
class Manifest:
    family: str  # encoder (BERT-style) | seq2seq (T5-style, models.text2text)
    head: str  # none | stock | pooled | multitask | text2text (label words, no head)
    stage: str  # the stage that wrote the directory
    preprocessing: Preprocessing | None = None
    task: Task | None = None  # the task the head classifies (stock, pooled)
    # pooled: models.pooling.HeadSpec; text2text: label_scoring and, for regression, the values
    head_config: dict[str, Any] = field(default_factory=dict)
    # multitask: task name -> {"task": Task, "architecture": class name, "file": weights file}
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a name in models.methods.METHODS, checked on loading (method_in); full (every weight
    # trained) for manifests written before there were methods
    method: str = "full"
    # an adapter's frozen base, by models.adapters.base_fingerprint: one base serves many tasks
    base_fingerprint: str | None = None
    # the stages that made the directory, oldest first: {"stage": name, "ran": bool, ...}
    recipe: list[dict[str, Any]] = field(default_factory=list)
    # classification: the scores are divided by it before the softmax (bertfit.calibration;
    # fitted on validation by finetune); 1.0 = the raw softmax
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"manifest head must be one of {list(HEADS)}, got {self.head!r}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = asdict(self.preprocessing) if self.preprocessing else None
        data["task"] = self.task.info() if self.task else None
        data["heads"] = {name: h | {"task": h["task"].info()} for name, h in self.heads.items()}
        return data

    def save(self, model_dir: Path) -> None:
        write_json(Path(model_dir) / MANIFEST_FILE, self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        prep, task = data.get("preprocessing"), data.get("task")
        return cls(
            family=data["family"],
            head=data["head"],
            stage=data["stage"],
            method=data.get("method", "full"),
            base_fingerprint=data.get("base_fingerprint"),
            recipe=data.get("recipe") or [],
            temperature=float(data.get("temperature", 1.0)),
            preprocessing=Preprocessing(**prep) if prep else None,
            task=task_from_info(task) if task else None,
            head_config=data.get("head_config") or {},
            heads={
                name: h | {"task": task_from_info(h["task"])}
                for name, h in (data.get("heads") or {}).items()
            },
        )


def recipe_of(model_dir: Path) -> list[dict[str, Any]]:
    """The recipe recorded in a directory bertfit wrote; [] for any other (a base model)."""
    if not (Path(model_dir) / MANIFEST_FILE).is_file():
        return []
    return read_manifest(model_dir).recipe


def read_manifest(model_dir: Path) -> Manifest:
    """The manifest of a directory bertfit wrote; a readable error for any other directory."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; {model_dir} was not written by a bertfit stage (run `dvc repro`, "
            "or point at models/finetune)"
        )
    return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))


def model_fingerprint(model_dir: Path) -> str:
    """md5 of the directory's files (their relative paths and md5s) but its model card: the
    weights, config, tokenizer and manifest that make its predictions. evaluate records it with
    its test metrics, so those are attached (bertfit export's card) to this very model only;
    the card is left out since it is prose about the model, which export rewrites and a person
    may edit."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    h = hashlib.md5()
    for file in files:
        name = file.relative_to(model_dir).as_posix()
        if name != CARD_FILE:
            h.update(f"{name}\0{file_md5(file)}\n".encode())
    return h.hexdigest()
