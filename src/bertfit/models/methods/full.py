"""`full`: every weight trains, and the directory is the model itself.

A stock encoder classifier saved this way still loads with `pipeline("text-classification")`;
the multitask stage saves its shared model in the family's own form (models.family).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from bertfit.data.tasks import Task
from bertfit.models.loading import load_tokenizer
from bertfit.models.manifest import Manifest
from bertfit.models.methods.base import Family, Heads, TuningMethod
from bertfit.models.pooling import HeadSpec
from bertfit.params import AdaptableParams


class Full(TuningMethod):
    """Every weight trains; nothing is frozen, nothing saved apart."""

    name = "full"
    adapter = False
    library_name = "transformers"

    def describe(self, family: Family, head: str) -> str:
        return family.describe(head)

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
        return model, False

    def wrap_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        params: AdaptableParams,
        model_dir: Path,
        max_seq_length: int,
    ) -> nn.Module:
        return model

    def save(
        self,
        model: nn.Module,
        family: Family,
        tokenizer: PreTrainedTokenizerBase,
        base_dir: Path,
        model_dir: Path,
    ) -> None:
        family.save(model, model_dir)

    def save_tasks(
        self,
        model: nn.Module,
        family: Family,
        tasks: list[Task],
        configs: dict[str, dict],
        model_dir: Path,
    ) -> tuple[str, Heads, str | None]:
        head, heads = family.save_multitask(model, tasks, configs, model_dir)
        return head, heads, None

    def load(
        self, family: Family, model_dir: Path, manifest: Manifest
    ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        model = family.load(Path(model_dir), manifest)
        return model, load_tokenizer(str(model_dir))
