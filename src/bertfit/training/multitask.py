"""Multi-task fine-tuning (Sun et al. 2019, section 5.2): one shared encoder, one head per task.

Each task's head is its architecture's own sequence-classification head (BERT: pooler, dropout,
linear), built with AutoModelForSequenceClassification and re-pointed at one shared encoder
module, so classification (cross-entropy) and regression (num_labels 1, MSE) come from
transformers, and finetune can load the target's head into the same class. Every batch comes from
one task (training.sampling); the HF Trainer runs the optimisation with layer-wise decay.

Trainer has no multi-task evaluation or model selection: every `eval_steps` each task is scored on
its validation split and the weights with the best mean of the tasks' main metrics (accuracy,
Pearson for regression) are kept in memory and restored at the end, as load_best_model_at_end
would; Trainer's checkpoints would store the shared encoder once per head.

Output: the encoder as a standard HF directory (what finetune loads), plus `multitask_heads/`
with one safetensors file per task and `tasks.json` (labels, problem type).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainingArguments,
    set_seed,
)

from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.inference import predict_logits
from bertfit.metrics import MAIN_METRIC, task_metrics
from bertfit.models.heads import TaskHead, save_heads
from bertfit.models.loading import (
    LOAD_KWARGS,
    check_max_seq_length,
    classifier_config,
    load_config,
    load_tokenizer,
)
from bertfit.params import MultitaskParams
from bertfit.reporting import split_history, write_csv, write_json
from bertfit.training.finetune import LayerwiseDecayTrainer
from bertfit.training.hardware import bf16_available, device_arguments
from bertfit.training.sampling import TaskBatchSampler

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    """One task's tokenised train and validation sets, with what its head needs to know."""

    name: str
    problem: str  # classification | regression
    labels: list[str]  # class names in id order; empty for regression
    train: Dataset
    validation: Dataset

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.labels)


class MultiTaskModel(nn.Module):
    """A shared encoder and one sequence-classification model per task built around it."""

    accepts_loss_kwargs = False  # the heads' losses are per-batch means (Trainer scales for GA)

    def __init__(self, encoder: PreTrainedModel, heads: dict[str, PreTrainedModel]) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # encoder depth, for layer-wise decay
        for head in heads.values():
            setattr(head, head.base_model_prefix, encoder)  # drop its own encoder, share this one
        self.heads = nn.ModuleDict(heads)

    @classmethod
    def build(cls, model_name: str, tasks: list[TaskData]) -> MultiTaskModel:
        encoder = AutoModel.from_pretrained(model_name, **LOAD_KWARGS)
        heads = {}
        for task in tasks:
            # from_config builds a throw-away encoder too; it is replaced by the shared one
            heads[task.name] = AutoModelForSequenceClassification.from_config(
                classifier_config(model_name, task.labels, task.problem)
            )
        return cls(encoder, heads)

    def forward(self, task: str, **inputs: torch.Tensor) -> Any:
        return self.heads[task](**inputs)

    def head_state(self, task: str) -> dict[str, torch.Tensor]:
        """The task head's own weights: everything but the shared encoder."""
        head = self.heads[task]
        prefix = f"{head.base_model_prefix}."
        return {k: v for k, v in head.state_dict().items() if not k.startswith(prefix)}

    def snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        """A CPU copy of the encoder and every head, each shared tensor once."""
        copy = {"encoder": self.encoder.state_dict()} | {t: self.head_state(t) for t in self.heads}
        return {
            part: {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
            for part, state in copy.items()
        }

    def restore(self, snapshot: dict[str, dict[str, torch.Tensor]]) -> None:
        self.encoder.load_state_dict(snapshot["encoder"])
        for task, head in self.heads.items():
            missing, unexpected = head.load_state_dict(snapshot[task], strict=False)
            if unexpected or any(k in snapshot[task] for k in missing):
                raise RuntimeError(f"head {task}: snapshot does not fit ({missing}, {unexpected})")


class TaskBatchCollator:
    """Pads a batch of one task's rows and tags it with the task's name."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None) -> None:
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {row.pop("task") for row in rows}
        if len(tasks) != 1:
            raise RuntimeError(f"a multi-task batch must hold one task, got {sorted(tasks)}")
        for row in rows:
            row.pop("length", None)
        return self.pad(rows) | {"task": tasks.pop()}


class ConcatTasks(torch.utils.data.Dataset):
    """The tasks' train sets end to end; TaskBatchSampler's indices point into this."""

    def __init__(self, tasks: list[TaskData]) -> None:
        self.tasks = tasks
        self.ends = np.cumsum([len(t.train) for t in tasks])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        t = int(np.searchsorted(self.ends, index, side="right"))
        start = int(self.ends[t - 1]) if t else 0
        return {"task": self.tasks[t].name, **self.tasks[t].train[index - start]}


class MultiTaskTrainer(LayerwiseDecayTrainer):
    """Trainer with task-homogeneous batches, per-task losses and per-task validation."""

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        tasks: list[TaskData],
        batch_sampler: TaskBatchSampler,
        eval_batch_size: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = tasks
        self.batch_sampler = batch_sampler
        self.eval_batch_size = eval_batch_size
        self.task_loss: dict[str, list] = {}  # task -> [summed detached loss, batches]
        self.validation_history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(
            ConcatTasks(self.tasks),
            batch_sampler=self.batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        task = inputs.pop("task")
        outputs = model(task=task, **inputs)
        loss = outputs.loss
        total = self.task_loss.setdefault(task, [0.0, 0])
        total[0] = total[0] + loss.detach()  # summed on the device: no sync per step
        total[1] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.task_loss:  # a training log: add each task's mean loss
            for task, (summed, batches) in sorted(self.task_loss.items()):
                logs[f"loss_{task}"] = round(float(summed) / batches, 4)
            self.task_loss = {}
        super().log(logs, start_time)

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Every task on its validation split; keeps the weights with the best mean main metric."""
        model = self.accelerator.unwrap_model(self.model)
        tokenizer = self.processing_class
        row: dict[str, Any] = {"step": self.state.global_step}
        main = []
        for task in self.tasks:
            logits = predict_logits(
                model.heads[task.name],
                tokenizer,
                task.validation,
                self.eval_batch_size,
                bf16=self.args.bf16,  # scored under the autocast it trains with
            )
            scores = task_metrics(task.problem, np.asarray(task.validation["labels"]), logits)
            row |= {f"{task.name}_{k}": v for k, v in scores.items()}
            main.append(scores[MAIN_METRIC[task.problem]])
        row["mean_main"] = float(np.mean(main))
        self.validation_history.append(row)
        if self.best is None or row["mean_main"] > self.best["row"]["mean_main"]:
            self.best = {"row": row, "weights": model.snapshot()}
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in row.items() if k != "step"}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


def training_arguments(params: MultitaskParams, work_dir: Path) -> TrainingArguments:
    bf16 = params.mixed_precision == "auto" and bf16_available()
    return TrainingArguments(
        output_dir=str(work_dir),
        seed=params.seed,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        max_steps=params.max_steps,
        warmup_steps=params.warmup_ratio,  # a float in [0, 1) is a ratio of max_steps
        lr_scheduler_type=params.lr_scheduler_type,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        eval_strategy="steps",
        eval_steps=params.eval_steps,
        save_strategy="no",  # the best weights are kept in memory (see the module docstring)
        logging_steps=params.logging_steps,
        remove_unused_columns=False,
        ddp_find_unused_parameters=True,  # a batch trains one head; the others get no gradient
        dataloader_num_workers=0,
        **device_arguments(bf16),
    )


def save_multitask(
    model: MultiTaskModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[TaskData],
    output_dir: Path,
) -> None:
    """The encoder as a standard HF directory, the heads beside it in multitask_heads/."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=".multitask-") as work:
        staged = Path(work) / "model"
        model.encoder.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        save_heads(
            staged,
            {
                t.name: TaskHead(
                    t.problem,
                    t.labels,
                    type(model.heads[t.name]).__name__,
                    model.head_state(t.name),
                )
                for t in tasks
            },
        )
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.move(str(staged), output_dir)


def pass_through(model_dir: Path, output_dir: Path) -> None:
    """`enabled: false`: the pretrained encoder, unchanged, where finetune expects it."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    shutil.copytree(model_dir, output_dir)


def prepare_tasks(
    frames: dict[str, dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    params: MultitaskParams,
    max_seq_length: int,
) -> list[TaskData]:
    """Tokenise each task's train and validation frames ({task: {problem, labels, train, ...}})."""
    encoder = Encoder(
        tokenizer, Preprocessing(max_seq_length, params.truncation, params.head_tokens), "multitask"
    )
    tasks = []
    for name in params.tasks:
        info = frames[name]
        if len(info["train"]) == 0:
            raise ValueError(
                f"multitask.tasks: {name} has no train rows; drop it from the multitask set"
            )
        if len(info["validation"]) == 0:
            raise ValueError(f"multitask.tasks: {name} has no validation rows to score it on")
        problem, labels = info["problem"], info["labels"]
        tasks.append(
            TaskData(
                name,
                problem,
                labels,
                encoder.labelled(info["train"], labels, problem, f"multitask task {name}"),
                encoder.labelled(info["validation"], labels, problem, f"multitask task {name}"),
            )
        )
    return tasks


def multitask(
    model_dir: Path,
    frames: dict[str, dict[str, Any]],
    params: MultitaskParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
) -> dict[str, Any]:
    """Train the shared encoder and the task heads; save the best on the mean validation metric."""
    if not params.enabled:
        metrics: dict[str, Any] = {"enabled": False}
        state = PartialState()
        if state.is_main_process:
            pass_through(model_dir, output_dir)
            write_json(report_dir / "metrics.json", metrics)
            write_csv(report_dir / "loss.csv", [], ["step", "epoch", "loss", "learning_rate"])
            write_csv(report_dir / "validation.csv", [], ["step", "mean_main"])
            log.info("multitask.enabled is false: %s passed through unchanged", model_dir)
        state.wait_for_everyone()
        return metrics

    set_seed(params.seed)
    tokenizer = load_tokenizer(str(model_dir))
    check_max_seq_length(load_config(str(model_dir)), max_seq_length, str(model_dir))
    tasks = prepare_tasks(frames, tokenizer, params, max_seq_length)
    model = MultiTaskModel.build(str(model_dir), tasks)

    work_dir = output_dir.parent / f".{output_dir.name}-work"
    args = training_arguments(params, work_dir)
    batches = params.max_steps * params.gradient_accumulation_steps * args.world_size
    sampler = TaskBatchSampler(
        [len(t.train) for t in tasks],
        params.per_device_train_batch_size,
        batches,
        params.sampling,
        params.temperature,
        params.seed,
    )
    log.info(
        "multitask on %s (train %s); %s sampling (T=%g), batches per task %s; %d steps, lr %g, "
        "layer decay %g; device %s",
        model_dir,
        {t.name: len(t.train) for t in tasks},
        params.sampling,
        params.temperature,
        dict(zip([t.name for t in tasks], sampler.task_counts(), strict=True)),
        params.max_steps,
        params.learning_rate,
        params.layer_decay,
        "cuda" if torch.cuda.is_available() else "cpu",
    )
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        eval_dataset={t.name: t.validation for t in tasks},  # scored by evaluate() below
        processing_class=tokenizer,
        data_collator=TaskBatchCollator(
            tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None
        ),
        layer_decay=params.layer_decay,
        tasks=tasks,
        batch_sampler=sampler,
        eval_batch_size=params.per_device_eval_batch_size,
    )
    output = trainer.train()
    if (
        not trainer.validation_history
        or trainer.validation_history[-1]["step"] != output.global_step
    ):
        trainer.evaluate()  # the last steps, when max_steps is not a multiple of eval_steps
    best = trainer.best
    model.restore(best["weights"])
    log.info("best validation at step %d: %s", best["row"]["step"], best["row"])

    trainer.accelerator.wait_for_everyone()
    if args.process_index != 0:
        return {}
    save_multitask(model, tokenizer, tasks, output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    losses, _ = split_history(trainer.state.log_history)
    task_batches = dict(zip([t.name for t in tasks], sampler.task_counts(), strict=True))
    best_row = best["row"]
    metrics = {
        "enabled": True,
        "sampling": params.sampling,
        "best_step": best_row["step"],
        "validation_mean_main": best_row["mean_main"],
        "validation": {
            t.name: {
                k.removeprefix(f"{t.name}_"): v
                for k, v in best_row.items()
                if k.startswith(f"{t.name}_")
            }
            for t in tasks
        },
        "task_batches": task_batches,
        "train_examples": {t.name: len(t.train) for t in tasks},
        "world_size": args.world_size,
        "train_runtime_s": output.metrics["train_runtime"],
    }
    write_json(report_dir / "metrics.json", metrics)
    loss_fields = ["step", "epoch", "loss", "learning_rate", *(f"loss_{t.name}" for t in tasks)]
    write_csv(report_dir / "loss.csv", losses, loss_fields)
    scores = sorted({k for row in trainer.validation_history for k in row} - {"step", "mean_main"})
    eval_fields = ["step", "mean_main", *scores]
    write_csv(report_dir / "validation.csv", trainer.validation_history, eval_fields)
    return metrics
