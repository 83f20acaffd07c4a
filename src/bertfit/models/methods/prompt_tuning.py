"""`prompt_tuning` (Lester et al. 2021): trainable prompt vectors, every model weight frozen.

`num_virtual_tokens` trainable vectors are prepended to the input embeddings. For a seq2seq
model the prompt sits on the encoder input only (peft's SEQ_2_SEQ_LM with
`num_transformer_submodules=1`; peft's default of 2 would allocate a second, unused set of rows).
For an encoder (peft's SEQ_CLS) the classifier head trains too, and the prompt sits *before*
[CLS]: BERT's pooler reads position 0, which is then the first virtual token, not [CLS]. That
vector is trainable and attends to the whole text, so it acts as a learned [CLS]; the stock head
pools it, and we leave it so rather than moving the prompt behind [CLS] (which peft does not
offer). The prompt takes input positions, so absolute-position models fit it and the text
together. Finetune can start the target's prompt from the one multitask tuned for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from peft import PeftConfig, PromptTuningConfig, PromptTuningInit, TaskType

from bertfit.data.tasks import Task
from bertfit.models.manifest import MANIFEST_FILE, read_manifest
from bertfit.models.methods.base import PeftMethod
from bertfit.params import AdaptableParams

log = logging.getLogger(__name__)

PROMPT_INITS = {
    "text": PromptTuningInit.TEXT,
    "sample_vocab": PromptTuningInit.SAMPLE_VOCAB,
    "random": PromptTuningInit.RANDOM,
}


def default_init_text(words: list[str]) -> str:
    """Lester et al. initialise the prompt from words of the task: here, its label words."""
    return "Classify the text as " + " or ".join(words) + "."


def check_prompt_length(
    config: Any, max_seq_length: int, num_virtual_tokens: int, section: str = "finetune"
) -> None:
    """Absolute-position models must fit the prompt and the text together."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_seq_length + num_virtual_tokens > limit:
        raise ValueError(
            f"params.yaml: model.max_seq_length ({max_seq_length}) + {section}.num_virtual_tokens "
            f"({num_virtual_tokens}) must be at most the model's max_position_embeddings "
            f"({limit}): the prompt takes positions too"
        )


class PromptTuning(PeftMethod):
    """A soft prompt per task on the frozen model (and, for an encoder, the task's head)."""

    name = "prompt_tuning"

    def extra_positions(self, params: AdaptableParams) -> int:
        return params.num_virtual_tokens  # the prompt takes positions too

    def config(
        self, task_type: TaskType, params: AdaptableParams, tokenizer_dir: str, words: list[str]
    ) -> PromptTuningConfig:
        init = PROMPT_INITS[params.prompt_init]
        text = params.prompt_init_text or default_init_text(words)
        return PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=params.num_virtual_tokens,
            num_transformer_submodules=1,  # Lester et al.: the prompt on the encoder input only
            prompt_tuning_init=init,
            prompt_tuning_init_text=text if init == PromptTuningInit.TEXT else None,
            tokenizer_name_or_path=tokenizer_dir if init == PromptTuningInit.TEXT else None,
        )

    def check_input(
        self, config: Any, max_seq_length: int, params: AdaptableParams, section: str
    ) -> None:
        check_prompt_length(config, max_seq_length, params.num_virtual_tokens, section)

    def multitask_start(self, params: AdaptableParams, model_dir: str, task: Task) -> Path | None:
        """finetune.init_head_from_multitask: the target's own multitask prompt (and head),
        when multitask tuned one for the same labels and of the same length."""
        if not params.init_head_from_multitask:
            return None
        if not (Path(model_dir) / MANIFEST_FILE).is_file():
            return None
        manifest = read_manifest(Path(model_dir))
        entry = manifest.heads.get(task.name)
        if manifest.method != self.name or entry is None:
            log.info(
                "no multitask prompt for %s in %s: the prompt starts afresh", task.name, model_dir
            )
            return None
        saved: Task = entry["task"]
        if (saved.problem, saved.labels) != (task.problem, task.labels):
            log.warning(
                "the multitask prompt of %s was tuned for labels %s, the task now has %s: the "
                "prompt starts afresh",
                task.name,
                saved.labels,
                task.labels,
            )
            return None
        adapter_dir = Path(model_dir) / entry["adapter"]
        tokens = PeftConfig.from_pretrained(str(adapter_dir)).num_virtual_tokens
        if tokens != params.num_virtual_tokens:
            log.warning(
                "the multitask prompt of %s has %d virtual tokens, finetune.num_virtual_tokens is "
                "%d: the prompt starts afresh (set them equal to start from it)",
                task.name,
                tokens,
                params.num_virtual_tokens,
            )
            return None
        log.info("the %s prompt starts from its multitask prompt (%s)", task.name, adapter_dir)
        return adapter_dir
