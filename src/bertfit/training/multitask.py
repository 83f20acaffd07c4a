"""Multi-task fine-tuning (Sun et al. 2019, section 5.2): one shared encoder, one head per task.

The model is models.heads.MultiTaskModel. Every batch comes from one task, drawn by
training.sampling; the training core (training.trainer) runs the optimisation with layer-wise
decay and logs each task's loss. Every `eval_steps` each task is scored on its validation split
through the family's `score` with its own metric (tasks.<name>.metric), and the weights with the
best mean are restored at the end (training.selection).

Output: the encoder as a standard HF directory (what finetune loads), `multitask_heads/` with
one safetensors file per task, and the manifest listing every head with its task.

A seq2seq model (T5) has no heads: every task is text-to-text with its own prefix and label
words (models.text2text), one model learns them all, and each task's validation is scored by
ranking its label words. The output is the seq2seq model itself, as a standard directory.
T5's examples-proportional mixing is `mixing_limit` (training.sampling).

`method: prompt_tuning` (Lester et al. 2021; the mT5 recipe): the base stays frozen and each task
trains its own soft prompt (and, for an encoder, its own head) on it, in the same mixed batches
(models.adapters.TaskAdapters). The output is the base, unchanged, as a standard directory, with
`prompts/<task>/` holding each task's adapter, so finetune can start the target's prompt from its
own and one loaded base serves every task (models.family.load_task_adapters).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import TrainingArguments, set_seed

from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.tasks import Task
from bertfit.models.adapters import TaskAdapters, trainable_report
from bertfit.models.family import Family, family_for
from bertfit.models.heads import MultiTaskModel
from bertfit.models.loading import check_max_seq_length, load_config, load_tokenizer
from bertfit.models.manifest import Manifest, recipe_of
from bertfit.models.methods import METHODS
from bertfit.models.methods.base import TuningMethod
from bertfit.params import MultitaskParams
from bertfit.phases import headline, phase
from bertfit.reporting import check_writable
from bertfit.training import trainer as core
from bertfit.training.checkpoints import clear_checkpoints, frame_bytes, saving, stage_resume
from bertfit.training.live import LIVE_DIR, TRAINING_KEYS, LiveLog
from bertfit.training.sampling import TaskBatchSampler
from bertfit.training.selection import Selection, ValidationSet

log = logging.getLogger(__name__)

# metrics.json, what a reviewer compares (`dvc exp show` columns): the selection value, the
# mean of each task's own validation metric; everything else is in run.json
METRIC_KEYS = ("validation_mean_main",)


class TaskBatchCollator:
    """Pads a batch of one task's rows (the family's collator) and tags it with the task."""

    def __init__(self, pad: Callable[[list[dict]], dict[str, Any]]) -> None:
        self.pad = pad

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {row.pop("task") for row in rows}
        if len(tasks) != 1:
            raise RuntimeError(f"a multi-task batch must hold one task, got {sorted(tasks)}")
        for row in rows:
            row.pop("length", None)
        return self.pad(rows) | {"task": tasks.pop()}


class ConcatTasks(torch.utils.data.Dataset):
    """The tasks' train sets end to end; TaskBatchSampler's indices point into this."""

    def __init__(self, names: list[str], datasets: list[Any]) -> None:
        self.names = names
        self.datasets = datasets
        self.ends = np.cumsum([len(d) for d in datasets])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        t = int(np.searchsorted(self.ends, index, side="right"))
        start = int(self.ends[t - 1]) if t else 0
        return {"task": self.names[t], **self.datasets[t][index - start]}


def task_sampler(params: MultitaskParams, sizes: list[int], world_size: int) -> TaskBatchSampler:
    """Which task each batch comes from, for every process's batches of the whole run."""
    batches = params.max_steps * params.gradient_accumulation_steps * world_size
    return TaskBatchSampler(
        sizes,
        params.per_device_train_batch_size,
        batches,
        params.sampling,
        params.temperature,
        params.seed,
        params.mixing_limit,
    )


def validation_set(encoder: Encoder, task: Task, df: pd.DataFrame) -> ValidationSet:
    """A task's validation rows, scored on its own metric (tasks.<name>.metric)."""
    return ValidationSet(task, encoder.labelled(df, task, "validation"), task.metric)


def task_sets(
    family: Family,
    encoder: Any,
    tokenizer: Any,
    tasks: list[Task],
    frames: dict[str, dict[str, pd.DataFrame]],
    params: MultitaskParams,
) -> tuple[dict[str, dict], list[Any], list[ValidationSet]]:
    """Each task's scoring config (label words, value grid), train set and validation set."""
    configs = {
        t.name: family.head_config(t, frames[t.name]["train"], params.label_scoring) for t in tasks
    }
    train = [
        family.training_set(
            encoder.labelled(frames[t.name]["train"], t, "train"), t, tokenizer, configs[t.name]
        )
        for t in tasks
    ]
    sets = [validation_set(encoder, t, frames[t.name]["validation"]) for t in tasks]
    return configs, train, sets


def check_tasks(tasks: list[Task], frames: dict[str, dict[str, Any]]) -> None:
    for task in tasks:
        if len(frames[task.name]["train"]) == 0:
            raise ValueError(
                f"multitask.tasks: {task.name} has no train rows; drop it from the multitask set"
            )
        if len(frames[task.name]["validation"]) == 0:
            raise ValueError(f"multitask.tasks: {task.name} has no validation rows to score it on")


def multitask_arguments(
    params: MultitaskParams, work_dir: Path, resumable: bool = False
) -> TrainingArguments:
    """The stage's TrainingArguments: max_steps, every task scored each eval_steps; when
    resumable, a checkpoint after each evaluation (the best weights ride in it; in between
    they are kept in memory, training.selection)."""
    return core.training_arguments(
        params,
        work_dir,
        max_steps=params.max_steps,
        eval_strategy="steps",
        eval_steps=params.eval_steps,
        **saving(resumable, save_strategy="steps", save_steps=params.eval_steps),
        remove_unused_columns=False,
        ddp_find_unused_parameters=True,  # a batch trains one head; the others get no gradient
    )


def best_metrics(selection: Selection, tasks: list[Task]) -> dict[str, Any]:
    """The selected step, its mean, and each task's validation scores at it."""
    best = selection.best
    return {
        "best_step": best["step"],
        "validation_mean_main": best["mean_main"],
        "selected_on": {t.name: t.metric for t in tasks},
        "validation": {
            t.name: {
                k.removeprefix(f"{t.name}_"): v
                for k, v in best.items()
                if k.startswith(f"{t.name}_")
            }
            for t in tasks
        },
    }


@dataclass
class MultitaskRun:
    """What multitask's set-up prepared for its run and its save: the tasks, the family and
    method, each task's scoring config, how texts became inputs, the trainer (model, mixed
    batches, selection and DVCLive log in it), the checkpoint to resume from, each task's
    batches and train size, and the work directory."""

    tasks: list[Task]
    params: MultitaskParams
    family: Family
    method: TuningMethod
    configs: dict[str, dict]
    prep: Preprocessing
    tokenizer: Any
    model: torch.nn.Module
    selection: Selection
    trainer: Any
    live: LiveLog
    resume: str | None
    task_batches: dict[str, int]
    sizes: dict[str, int]
    work_dir: Path


def multitask(
    model_dir: Path,
    tasks: list[Task],
    params: MultitaskParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Train the shared encoder and the task heads; keep the best mean validation metric.
    With checkpoint_dir, a killed run resumes from its last checkpoint (training.checkpoints).
    With `target` (the stage's), the model passes through unchanged when the target is not in
    multitask.tasks (MultitaskParams.skipped_because), as when multitask is disabled."""
    check_writable(output_dir.parent, report_dir, (checkpoint_dir or output_dir).parent)
    family = family_for(str(model_dir))
    recipe = recipe_of(model_dir)
    if target is None:  # called without a target (tests, benchmarks): `enabled` decides
        reason = None if params.enabled else "multitask.enabled is false"
    else:
        reason = params.skipped_because(target)
    if reason is not None:
        entry = {"stage": "multitask", "ran": False, "reason": reason}
        manifest = Manifest(family.name, "none", "multitask", recipe=[*recipe, entry])
        record = ({"enabled": False}, METRIC_KEYS, params)
        curves = [*TRAINING_KEYS, "validation_mean_main"]
        return core.skip_stage(
            str(model_dir), output_dir, manifest, report_dir, record, curves, reason
        )
    run = prepare_multitask(
        model_dir, tasks, params, max_seq_length, output_dir, report_dir, checkpoint_dir
    )
    output = train_multitask(run)
    if not run.trainer.is_world_process_zero():
        return {}
    return save_multitask(run, output, recipe, output_dir, report_dir, checkpoint_dir)


def prepare_multitask(
    model_dir: Path,
    tasks: list[Task],
    params: MultitaskParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path | None = None,
) -> MultitaskRun:
    """The set-up: each task's train and validation sets, the model as the method trains it,
    the task sampler, the selection and the trainer."""
    family = family_for(str(model_dir))
    frames = {t.name: {s: t.split(s) for s in ("train", "validation")} for t in tasks}
    check_tasks(tasks, frames)

    set_seed(params.seed)
    tokenizer = load_tokenizer(str(model_dir))
    check_max_seq_length(load_config(str(model_dir)), max_seq_length, str(model_dir))
    prep = Preprocessing(max_seq_length, params.truncation, params.head_tokens)
    encoder = family.encoder(tokenizer, prep, "multitask")
    with phase("tokenising"):
        configs, train, sets = task_sets(family, encoder, tokenizer, tasks, frames, params)
    method = METHODS[params.method]
    model = build_model(family, method, model_dir, tasks, params, max_seq_length)

    work_dir = output_dir.parent / f".{output_dir.name}-work"
    args = multitask_arguments(params, checkpoint_dir or work_dir, checkpoint_dir is not None)
    data = [str(max_seq_length).encode()]
    data += frame_bytes(*(frames[t.name][s] for t in tasks for s in ("train", "validation")))
    resume, _ = stage_resume(args, checkpoint_dir, str(model_dir), params, data)
    sampler = task_sampler(params, [len(d) for d in train], args.world_size)
    task_batches = dict(zip([t.name for t in tasks], sampler.task_counts(), strict=True))
    sizes = dict(zip([t.name for t in tasks], map(len, train), strict=True))
    log.info(multitask_plan(model_dir, params, args, sizes, task_batches))
    # each task's own head (or label words) scores its validation set; the mean selects
    selection = Selection(
        sets,
        lambda task: family.scorer(task, tokenizer, configs[task.name]),
        family.collator(tokenizer, prep),
        params.per_device_eval_batch_size,
        per_task_columns=True,
        model_for=task_model(model),
    )
    batches = ConcatTasks([t.name for t in tasks], train)
    collator = TaskBatchCollator(family.collator(tokenizer, prep))
    live = LiveLog(report_dir / LIVE_DIR, "multitask", {t.name: t.metric for t in tasks})
    extra = {"selection": selection, "batch_sampler": sampler, "callbacks": [live]}
    trainer = core.stage_trainer(params, args, model, batches, collator, tokenizer, **extra)
    return MultitaskRun(
        tasks,
        params,
        family,
        method,
        configs,
        prep,
        tokenizer,
        model,
        selection,
        trainer,
        live,
        resume,
        task_batches,
        sizes,
        work_dir,
    )


def train_multitask(run: MultitaskRun) -> Any:
    """The run: training from the last checkpoint if any, the best mean validation's weights
    restored (training.trainer.fit)."""
    output = core.fit(run.trainer, run.resume)
    run.trainer.accelerator.wait_for_everyone()
    return output


def multitask_plan(
    model_dir: Path,
    params: MultitaskParams,
    args: TrainingArguments,
    sizes: dict[str, int],
    task_batches: dict[str, int],
) -> str:
    """The training-plan log line: each task's train examples and batches, the sampling."""
    return core.plan_line(
        f"multitask on {model_dir}",
        args,
        sum(sizes.values()),
        f"train {sizes}",
        sampling=f"{params.sampling} (T={params.temperature:g}, K={params.mixing_limit})",
        batches_per_task=task_batches,
        layer_decay=params.layer_decay,
        method=params.method,
    )


def save_multitask(
    run: MultitaskRun,
    output: Any,
    recipe: list[dict[str, Any]],
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path | None,
) -> dict[str, Any]:
    """The save: the model directory (module-level `save`) with the recipe so far and this
    run's entry, the work directory and checkpoints removed, the reports written. Returns
    the stage's record."""
    params, tasks, trainer, sizes = run.params, run.tasks, run.trainer, run.sizes
    metrics = multitask_metrics(
        params, run.selection, tasks, run.task_batches, sizes, run.model, trainer, output
    )
    entry = {
        "stage": "multitask",
        "ran": True,
        "tasks": [t.name for t in tasks],
        "train_examples": sizes,
        "steps": output.global_step,
        "sampling": params.sampling,
        "method": params.method,
        "batch_size": core.effective_batch_size(trainer.args),
        "learning_rate": params.learning_rate,
        "seed": params.seed,
        "best_step": metrics["best_step"],
        "validation_mean_main": metrics["validation_mean_main"],
    }
    recipe = [*recipe, entry]
    parts = (run.model, run.family, run.method, tasks, run.configs, run.prep, run.tokenizer)
    with phase("saving"):
        core.write_model_dir(output_dir, lambda staged: save(*parts, staged, recipe))
    shutil.rmtree(run.work_dir, ignore_errors=True)
    clear_checkpoints(checkpoint_dir)
    core.write_reports(report_dir, metrics, METRIC_KEYS, params, run.live)
    headline(multitask_headline(metrics, tasks))
    return metrics


def multitask_headline(metrics: dict[str, Any], tasks: list[Task]) -> str:
    """`mean validation 0.595 (mr accuracy 0.728, ...) at step 120`: the selection value and
    each task's own metric at the kept step."""
    scores = ", ".join(
        f"{t.name} {t.metric} {metrics['validation'][t.name][t.metric]:.3f}" for t in tasks
    )
    return (
        f"mean validation {metrics['validation_mean_main']:.3f} ({scores}) at step "
        f"{metrics['best_step']}"
    )


def multitask_metrics(
    params: MultitaskParams,
    selection: Selection,
    tasks: list[Task],
    task_batches: dict[str, int],
    sizes: dict[str, int],
    model: torch.nn.Module,
    trainer: Any,
    output: Any,
) -> dict[str, Any]:
    """The stage's record: the selected step and each task's scores at it, the batches each task
    got, the trainable share and optimiser state, and the run's size and time (metrics.json;
    the strings and the time go to run.json, reporting.split_record)."""
    return {
        "enabled": True,
        "sampling": params.sampling,
        **best_metrics(selection, tasks),
        "task_batches": task_batches,
        "method": params.method,
        **trainable_report(model, trainer.optimizer),
        "train_examples": sizes,
        "world_size": trainer.args.world_size,
        "train_runtime_s": output.metrics["train_runtime"],
    }


def build_model(
    family: Family,
    method: TuningMethod,
    model_dir: Path,
    tasks: list[Task],
    params: MultitaskParams,
    max_seq_length: int,
) -> torch.nn.Module:
    """The family's multitask model (the shared model and every task's head), as the method
    trains it: whole, or each task's adapter (prompt, and head) on the one frozen base."""
    model = family.multitask_model(model_dir, tasks)
    return method.wrap_tasks(model, family, tasks, params, model_dir, max_seq_length)


def task_model(model: torch.nn.Module) -> Callable[[torch.nn.Module, str], torch.nn.Module]:
    """What scores a task's validation rows: its head, its prompted model, or the one model."""
    if isinstance(model, TaskAdapters):
        return lambda m, task: m.adapter(task)
    if isinstance(model, MultiTaskModel):
        return lambda m, task: m.heads[task]
    return lambda m, _: m


def save(
    model: torch.nn.Module,
    family: Family,
    method: TuningMethod,
    tasks: list[Task],
    configs: dict[str, dict],
    prep: Preprocessing,
    tokenizer: Any,
    staged: Path,
    recipe: list[dict[str, Any]] | None = None,
) -> None:
    """The output directory: the tokenizer, the model in its family's and method's form (the
    shared model and its heads, or the frozen base and each task's adapter), and the manifest
    with how each task is scored and the recipe of the stages so far."""
    tokenizer.save_pretrained(staged)
    head, heads, fingerprint = method.save_tasks(model, family, tasks, configs, staged)
    Manifest(
        family.name,
        head,
        "multitask",
        prep,
        heads=heads,
        method=method.name,
        base_fingerprint=fingerprint,
        recipe=recipe or [],
    ).save(staged)
