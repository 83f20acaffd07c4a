"""The peft plumbing under the adapter methods (models.methods: prompt_tuning, lora), for
either family: putting an adapter on a model, resuming a saved one, naming the frozen base.

The adapter is saved as peft writes it (adapter_config.json + adapter_model.safetensors) and the
frozen base it was trained on beside it in `base/`, so a model directory stands alone:
`load_adapted` rebuilds base + adapter. Peft has no rule for layer-wise decay or a frozen body's
optimiser settings, nor a count of optimiser state, hence the checks and `trainable_report`.

One frozen base, many tasks (`TaskAdapters`): multitask prompt tuning trains one prompt per task
on one shared base, and serving (models.family.load_task_adapters) answers several tasks from one
loaded base. Each task is its own PeftModel, named after the task, around the one base module (an
encoder: the task's classifier built around the shared encoder, as models.heads does; a seq2seq
model: the model itself); a task's call activates its adapter. Peft's own multi-adapter model
(`load_adapter` / `set_adapter`) keeps one copy of the classifier per adapter, cloned from one
base head, so it cannot hold tasks with different label counts: hence one PeftModel per task.
`base_fingerprint` names the base's weights, so adapters trained apart can be checked to share it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    PromptTuningInit,
    get_peft_model,
    load_peft_weights,
    set_peft_model_state_dict,
)
from torch import nn

log = logging.getLogger(__name__)

BASE_DIR = "base"  # the frozen base, inside the adapter's directory
PROMPTS_DIR = "prompts"  # multitask prompt tuning: prompts/<task>/, one adapter per task


def adapt(
    model: nn.Module,
    config: PeftConfig,
    name: str = "default",
    section: str = "finetune",
) -> PeftModel:
    """The model with its weights frozen and the adapter's parameters (and head) trainable;
    LoRA's target modules checked first (`section`: the params section that names them)."""
    if isinstance(config, LoraConfig):
        check_lora_targets(model, config.target_modules, section)
    return get_peft_model(model, config, adapter_name=name)


def check_lora_targets(model: nn.Module, targets: Any, section: str) -> None:
    """Each of lora_target_modules names a module, as peft matches a list (the full name, or
    its last parts); peft's own error names neither the params key nor the model's modules."""
    if not targets or isinstance(targets, str):  # none: peft's defaults; a string: a regex
        return
    names = [n for n, _ in model.named_modules()]
    missing = sorted(t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names))
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ValueError(
            f"{section}.lora_target_modules: {missing} name no module of the model; its linear "
            f"layers are named {linear} (BERT's attention: [query, value]; T5's: [q, v])"
        )


def resume_adapter(model: nn.Module, adapter_dir: Path) -> PeftModel:
    """A saved adapter on `model`, trainable: training goes on from it (finetune starting from
    the target's multitask prompt). PeftModel.from_pretrained refuses to make a prompt
    trainable, so a new adapter of the saved config is made and the saved weights loaded into
    it. They replace any initialisation, so the init is switched off: peft would otherwise load
    the init text's tokenizer from wherever it was when the prompt was made."""
    config = PeftConfig.from_pretrained(str(adapter_dir))
    config.inference_mode = False
    # the config names the base where multitask trained it; peft warns that it now lies
    # elsewhere, which is expected here (the manifest names the base by its weights'
    # fingerprint, not by a path), and records the new place itself
    config.base_model_name_or_path = None
    if getattr(config, "prompt_tuning_init", None) is not None:
        config.prompt_tuning_init = PromptTuningInit.RANDOM
        config.prompt_tuning_init_text = None
        config.tokenizer_name_or_path = None
    adapted = get_peft_model(model, config)
    result = set_peft_model_state_dict(adapted, load_peft_weights(str(adapter_dir)))
    # peft loads a prompt into its embedding itself, yet lists it as unexpected for the model
    unexpected = [k for k in result.unexpected_keys if k != "prompt_embeddings"]
    if unexpected:
        raise RuntimeError(f"{adapter_dir}: weights that fit no adapter: {unexpected}")
    return adapted


def shared_base(model: nn.Module) -> nn.Module:
    """The part of a model that tasks share: a seq2seq model itself; for an encoder classifier
    its encoder (each task's head is its own); through a PeftModel, its base's."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return model
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


def base_fingerprint(model: nn.Module) -> str:
    """A digest of the frozen base's weights (for an encoder classifier, the encoder's only: each
    task's head differs), so adapters trained apart can be checked to share one base."""
    digest = hashlib.sha256()
    for name, tensor in sorted(shared_base(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class TaskAdapters(nn.Module):
    """One frozen base and one peft adapter per task, each a PeftModel named after its task.

    `forward(task=...)` routes a batch to its task (training.trainer passes `task` on), so the
    multitask stage trains every task's prompt in one run; `adapter(task)` is that task's model
    with its adapter active, for scoring.
    """

    accepts_loss_kwargs = False  # each task's loss is a per-batch mean (Trainer scales for GA)
    routes_tasks = True

    def __init__(self, adapted: dict[str, PeftModel]) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict(adapted)
        self.config = next(iter(adapted.values())).get_base_model().config  # for optim's depth

    @property
    def tasks(self) -> list[str]:
        return list(self.adapters)

    def adapter(self, task: str) -> PeftModel:
        """`task`'s model, its adapter active (LoRA layers in a shared base hold every task's)."""
        if task not in self.adapters:
            raise KeyError(f"no adapter for task {task!r}; loaded: {self.tasks}")
        model = self.adapters[task]
        if not model.active_peft_config.is_prompt_learning:
            model.base_model.set_adapter(task)
        return model

    def forward(self, task: str, **inputs: torch.Tensor) -> Any:
        return self.adapter(task)(**inputs)

    def save(self, model_dir: Path) -> dict[str, str]:
        """Each task's adapter in prompts/<task>/ (peft puts a named adapter in its own folder);
        returns task -> folder, relative to model_dir."""
        for task, model in self.adapters.items():
            model.save_pretrained(Path(model_dir) / PROMPTS_DIR, selected_adapters=[task])
        (Path(model_dir) / PROMPTS_DIR / "README.md").unlink(missing_ok=True)  # peft's stub card
        return {task: f"{PROMPTS_DIR}/{task}" for task in self.adapters}


def is_prompt_learning(model: nn.Module) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(config is not None and config.is_prompt_learning)


def trainable_report(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Trainable parameters (count, share of the model) and the optimiser state's bytes."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    state = 0
    if optimizer is not None:
        for values in optimizer.state.values():
            state += sum(
                v.numel() * v.element_size() for v in values.values() if torch.is_tensor(v)
            )
    return {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total if total else 0.0,
        "optimizer_state_bytes": state,
    }


def load_adapted(base: nn.Module, model_dir: Path) -> PeftModel:
    """The adapter in model_dir on its base (loaded by the caller from model_dir/base)."""
    return PeftModel.from_pretrained(base, model_dir, is_trainable=False)
