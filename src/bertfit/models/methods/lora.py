"""`lora` (Hu et al. 2021): rank-r updates of the target modules, every model weight frozen.

Peft's default modules for the architecture when finetune.lora_target_modules is null
(models.adapters.adapt checks named ones against the model first); an encoder's classifier
head trains too.
"""

from __future__ import annotations

from peft import LoraConfig, TaskType

from bertfit.models.methods.base import PeftMethod
from bertfit.params import FinetuneParams


class Lora(PeftMethod):
    """Low-rank updates on the frozen model's target modules."""

    name = "lora"

    def config(
        self, task_type: TaskType, params: FinetuneParams, tokenizer_dir: str, words: list[str]
    ) -> LoraConfig:
        return LoraConfig(
            task_type=task_type,
            r=params.lora_r,
            lora_alpha=params.lora_alpha,
            lora_dropout=params.lora_dropout,
            target_modules=params.lora_target_modules,
        )
