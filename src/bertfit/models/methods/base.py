"""What a tuning method is: the interface every method module fills, and the peft plumbing
the adapter methods share.

A method decides how a loaded model trains and how the result is saved and loaded again:
`full` trains every weight and saves the model as it is; an adapter method (models.methods'
prompt_tuning, lora) puts a peft adapter on the frozen model, saves that base first in
`base/` beside the adapter, and loads the two together. The stages (training.finetune,
training.multitask), the loader (models.family.load_trained), the input-length budget and the
model card ask the method and never its name; adding a method is one module plus its line in
models.methods.METHODS.
"""

from __future__ import annotations

import logging
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol

from peft import PeftConfig, TaskType
from torch import nn
from transformers import PreTrainedTokenizerBase

from bertfit.data.tasks import Task
from bertfit.models.adapters import (
    BASE_DIR,
    TaskAdapters,
    adapt,
    base_fingerprint,
    load_adapted,
    resume_adapter,
    shared_base,
)
from bertfit.models.loading import load_tokenizer, resolve_model_name
from bertfit.models.manifest import Manifest
from bertfit.models.pooling import HeadSpec
from bertfit.params import AdaptableParams

log = logging.getLogger(__name__)

Heads = dict[str, dict[str, Any]]  # the manifest's `heads`: task name -> its entry


class Family(Protocol):
    """What a method asks of the model family it trains; models.family's families fill it
    (the family imports the methods, so a method is handed its family, never imports it)."""

    name: str  # encoder | seq2seq: what a method can train (TuningMethod.unfit)
    task_type: TaskType  # peft's task type for an adapter on the family's models
    multitask_head: str  # the multitask stage's head name in the manifest

    def save(self, model: nn.Module, model_dir: Path) -> None: ...

    def load(self, model_dir: Path, manifest: Manifest) -> nn.Module: ...

    def describe(self, head: str) -> str: ...

    def task_part(self, model: nn.Module, task: Task) -> nn.Module: ...

    def save_multitask(
        self, model: nn.Module, tasks: list[Task], configs: dict[str, dict], model_dir: Path
    ) -> tuple[str, Heads]: ...


class TuningMethod(ABC):
    """One tuning method: how a model trains (wrap), is saved (save) and loads again (load),
    for finetune's one task and for multitask's several (wrap_tasks, save_tasks)."""

    name: str  # the params' and the manifest's `method`
    adapter: bool  # a peft adapter on a frozen base, the base saved beside it in base/
    library_name: str  # the model card's library: what loads the directory
    # None: finetune trains through the Trainer (training.trainer); else the key of the method's
    # own loop in training.finetune's OWN_LOOPS (models/ does not import training/)
    loop: str | None = None

    def unfit(self, family: Family, task: Task, head: HeadSpec | None) -> str | None:
        """Why the method cannot train `task` on `family` with `head`; None when it can."""
        return None

    def head(self, family: Family, task: Task, head: HeadSpec | None) -> HeadSpec | None:
        """The classifier head finetune builds for the method from the params' `head`."""
        return head

    def extra_positions(self, params: AdaptableParams) -> int:
        """Input positions the method takes besides the text's tokens."""
        return 0

    def fingerprint(self, model: nn.Module) -> str | None:
        """The frozen base's fingerprint for the manifest (None: no frozen base)."""
        return None

    def card_tags(self) -> list[str]:
        """The model card's tags for the method."""
        return []

    @abstractmethod
    def describe(self, family: Family, head: str) -> str:
        """What a directory of this method holds, for the model card's `This is ...`."""

    @abstractmethod
    def wrap(
        self,
        model: nn.Module,
        family: Family,
        params: AdaptableParams,
        model_name: str,
        task: Task,
        head: HeadSpec | None,
        max_seq_length: int,
        base_dir: Path,
    ) -> tuple[nn.Module, bool]:
        """finetune's model to train, and whether it starts from the target's multitask
        adapter; an adapter method saves the frozen base to `base_dir` first."""

    @abstractmethod
    def wrap_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        params: AdaptableParams,
        model_dir: Path,
        max_seq_length: int,
    ) -> nn.Module:
        """multitask's model to train, from the family's multitask model."""

    @abstractmethod
    def save(
        self,
        model: nn.Module,
        family: Family,
        tokenizer: PreTrainedTokenizerBase,
        base_dir: Path,
        model_dir: Path,
    ) -> None:
        """finetune's trained model in model_dir (an adapter: with its base from base_dir)."""

    @abstractmethod
    def save_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        configs: dict[str, dict],
        model_dir: Path,
    ) -> tuple[str, Heads, str | None]:
        """multitask's trained model in model_dir; returns the manifest's head, its `heads`
        and the base fingerprint."""

    @abstractmethod
    def load(
        self, family: Family, model_dir: Path, manifest: Manifest
    ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        """A finetune directory of this method: its model and tokenizer."""


class PeftMethod(TuningMethod):
    """A peft adapter on the frozen model (models.adapters), the base saved beside it in
    `base/`; an encoder's classifier head trains with the adapter."""

    adapter = True
    library_name = "peft"

    @abstractmethod
    def config(
        self, task_type: TaskType, params: AdaptableParams, tokenizer_dir: str, words: list[str]
    ) -> PeftConfig:
        """The adapter's peft config from the stage's params (`words`: the task's label
        words; `tokenizer_dir`: a directory peft can load the tokenizer from)."""

    def check_input(
        self, config: Any, max_seq_length: int, params: AdaptableParams, section: str
    ) -> None:
        """A params error when the adapter and the text do not fit the model together."""

    def multitask_start(self, params: AdaptableParams, model_dir: str, task: Task) -> Path | None:
        """The target's adapter from the multitask stage to start from, or None."""
        return None

    def fingerprint(self, model: nn.Module) -> str | None:
        return base_fingerprint(model)

    def card_tags(self) -> list[str]:
        return [self.name]

    def describe(self, family: Family, head: str) -> str:
        return f"a peft {self.name} adapter on the frozen base in `base/`"

    def wrap(
        self,
        model: nn.Module,
        family: Family,
        params: AdaptableParams,
        model_name: str,
        task: Task,
        head: HeadSpec | None,
        max_seq_length: int,
        base_dir: Path,
    ) -> tuple[nn.Module, bool]:
        if head is not None:
            raise ValueError(
                f"params.yaml: finetune.method {self.name} adapts the stock classifier; use "
                "feature cls and head_tail, head or tail truncation"
            )
        self.check_input(model.config, max_seq_length, params, "finetune")
        family.save(model, base_dir)  # frozen from here on: the adapter's base, saved beside it
        start = self.multitask_start(params, model_name, task)
        if start is not None:
            return resume_adapter(model, start), True
        # the tokenizer for a text-initialised prompt: a directory peft can load, not a package:
        tokenizer_dir = resolve_model_name(model_name)
        config = self.config(family.task_type, params, tokenizer_dir, task.words())
        return adapt(model, config), False

    def wrap_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        params: AdaptableParams,
        model_dir: Path,
        max_seq_length: int,
    ) -> TaskAdapters:
        """Each task's adapter (around its own head, for an encoder) on the one frozen base."""
        self.check_input(model.config, max_seq_length, params, "multitask")
        tokenizer_dir = resolve_model_name(str(model_dir))  # a directory peft can load text from
        adapted = {}
        for task in tasks:
            config = self.config(family.task_type, params, tokenizer_dir, task.words())
            around = family.task_part(model, task)
            adapted[task.name] = adapt(around, config, name=task.name, section="multitask")
        return TaskAdapters(adapted)

    def save(
        self,
        model: nn.Module,
        family: Family,
        tokenizer: PreTrainedTokenizerBase,
        base_dir: Path,
        model_dir: Path,
    ) -> None:
        family.save(model, model_dir)  # a peft model writes its adapter files
        shutil.copytree(base_dir, model_dir / BASE_DIR)
        tokenizer.save_pretrained(model_dir / BASE_DIR)

    def save_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        configs: dict[str, dict],
        model_dir: Path,
    ) -> tuple[str, Heads, str | None]:
        """The frozen base as a standard directory (what finetune loads), each task's adapter
        in prompts/<task>/ beside it, and how each task is scored."""
        base = shared_base(model.adapter(tasks[0].name))
        base.save_pretrained(model_dir)
        folders = model.save(model_dir)
        heads = {
            t.name: {
                "task": t,
                "adapter": folders[t.name],
                "architecture": type(model.adapter(t.name).get_base_model()).__name__,
                "head_config": configs[t.name],
            }
            for t in tasks
        }
        return family.multitask_head, heads, base_fingerprint(base)

    def load(
        self, family: Family, model_dir: Path, manifest: Manifest
    ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        base_dir = Path(model_dir) / BASE_DIR
        model = load_adapted(family.load(base_dir, manifest), Path(model_dir))
        return model, load_tokenizer(str(base_dir))
