"""Single-task fine-tuning of the target (Sun et al. 2019, section 5.3).

The stage body decides the model (the family's classifier: the stock head on the pooled [CLS],
or models.pooling's features and hierarchical pooling), its inputs (the paper's truncation
strategies, data.encoding) and its start (the target's multitask head), then calls the training
core (training.trainer): AdamW with decoupled weight decay, layer-wise learning-rate decay,
warm-up then linear decay, dynamic padding. The best epoch is chosen on the validation split
and never on test (training.selection): the reference code scored its "dev" set, which was the
test set, every epoch.

A seq2seq model (models.family's `seq2seq`) goes through the same body: the model itself is the
classifier, trained on its label words' token ids, and validation ranks the label words.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn
from transformers import TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import TrainOutput

from bertfit.calibration import calibration_record, fit_temperature
from bertfit.data.encoding import Preprocessing
from bertfit.data.splits import subsample
from bertfit.data.tasks import Task
from bertfit.model_card import README_FILE, model_card
from bertfit.models.adapters import BASE_DIR, trainable_report
from bertfit.models.family import Family, family_for
from bertfit.models.heads import load_task_head
from bertfit.models.loading import (
    base_model_info,
    check_max_seq_length,
    load_tokenizer,
    resolve_model_name,
)
from bertfit.models.manifest import MANIFEST_FILE, Manifest, read_manifest, recipe_of
from bertfit.models.methods import METHODS
from bertfit.models.pooling import HeadSpec
from bertfit.params import FinetuneParams
from bertfit.phases import headline, phase
from bertfit.reporting import check_writable, json_values, write_text
from bertfit.training import trainer as core
from bertfit.training.budget import (
    EarlyStopping,
    InputLength,
    TrainingLength,
    input_length,
    training_length,
    tuning_method,
)
from bertfit.training.checkpoints import clear_checkpoints, frame_bytes, saving, stage_resume
from bertfit.training.live import LIVE_DIR, LiveLog
from bertfit.training.selection import SE_SUFFIX, Selection, ValidationSet, selection_metric

log = logging.getLogger(__name__)

# metrics.json, what a reviewer compares (`dvc exp show` columns), beside the kept validation
# score: the trainable parameters (full, lora or a prompt) and the train rows used (bertfit
# ablate's learning curve reads them); everything else is in run.json
METRIC_KEYS = ("trainable_parameters", "train_examples")


def head_spec(params: FinetuneParams) -> HeadSpec | None:
    """None for the stock HF classifier, else the feature / pooling it lacks (models.pooling)."""
    hierarchical = params.truncation == "hierarchical"
    if not hierarchical and params.feature == "cls":
        return None
    return HeadSpec(
        params.feature, params.feature_layers, params.chunk_pooling if hierarchical else None
    )


def preprocessing(
    params: FinetuneParams, max_seq_length: int, head_tokens: int | None = None
) -> Preprocessing:
    """How texts become inputs; `head_tokens` when the long-text length scaled it."""
    hierarchical = params.truncation == "hierarchical"
    return Preprocessing(
        max_seq_length,
        params.truncation,
        params.head_tokens if head_tokens is None else head_tokens,
        params.chunk_stride if hierarchical else None,
        params.max_chunks if hierarchical else None,
    )


def finetune_arguments(
    params: FinetuneParams,
    work_dir: Path,
    resumable: bool = False,
    length: TrainingLength | None = None,
) -> TrainingArguments:
    """The stage's TrainingArguments: epochs, length-grouped batches, validation each epoch (or
    every `length.eval_steps`); when resumable, a checkpoint after each validation (the best
    weights ride in it; in between they are kept in memory, training.selection). Without
    `length`, num_train_epochs as given (training.budget decides it from the data)."""
    epochs = params.num_train_epochs if length is None else length.epochs
    if length is not None and length.eval_steps is not None:
        every = {"eval_strategy": "steps", "eval_steps": length.eval_steps}
        when = {"save_strategy": "steps", "save_steps": length.eval_steps}
    else:
        every, when = {"eval_strategy": "epoch"}, {"save_strategy": "epoch"}
    return core.training_arguments(
        params,
        work_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=(
            params.per_device_train_batch_size if length is None else length.batch_size
        ),
        train_sampling_strategy=params.train_sampling_strategy,
        **every,
        **saving(resumable, **when),
    )


def finetune_manifest(
    family: Family,
    prep: Preprocessing,
    task: Task,
    head: HeadSpec | None,
    head_config: dict,
    method: str,
    fingerprint: str | None,
) -> Manifest:
    """What the saved directory holds: the head, the task and how its inputs were built, the
    method and its frozen base's fingerprint (None for a full model)."""
    return Manifest(
        family=family.name,
        head=family.head_name(head),
        stage="finetune",
        method=method,
        preprocessing=prep,
        task=task,
        head_config=asdict(head) if head else head_config,
        base_fingerprint=fingerprint,
    )


def start_from_multitask(
    params: FinetuneParams,
    family: Family,
    model: nn.Module,
    model_dir: str,
    task: Task,
    head: HeadSpec | None,
) -> bool:
    """finetune.init_head_from_multitask: the target's multitask head, when it fits. Each way
    it goes is said once here (transformers' own report of the fresh head is held back,
    models.loading.load_with_fresh_head)."""
    if not hasattr(model, "config") or not family.has_head:
        return False  # a text-to-text model has no head: multitask trained the model itself
    if not params.init_head_from_multitask:
        log.info("finetune.init_head_from_multitask is false: the %s head starts fresh", task.name)
        return False
    if head is not None:
        log.info("the %s head is not the stock classifier: it starts fresh", task.name)
        return False
    return load_task_head(model, Path(model_dir), task)


def drawn(df: pd.DataFrame, task: Task, split: str, n: int | None, seed: int) -> pd.DataFrame:
    """n rows of a split (all for None), stratified by label for a classification task."""
    if n is None:
        return df
    where = f"{task.name} {split}, max_{split}_samples={n}"
    return subsample(df, n, seed, task.problem == "classification", where)


def labelled_sets(
    family: Family,
    encoder: Any,
    tokenizer: Any,
    task: Task,
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    params: FinetuneParams,
) -> tuple[dict[str, Any], Any, ValidationSet]:
    """The scoring config, the train set and the validation set (each drawn down to
    max_train_samples / max_validation_samples rows, stratified, when those are set)."""
    train_df = drawn(train_df, task, "train", params.max_train_samples, params.seed)
    validation_df = drawn(
        validation_df, task, "validation", params.max_validation_samples, params.seed
    )
    config = family.head_config(task, train_df, params.label_scoring)
    train_ds = family.training_set(
        encoder.labelled(train_df, task, "train"), task, tokenizer, config
    )
    validation = ValidationSet(
        task,
        encoder.labelled(validation_df, task, "validation"),
        selection_metric(params.metric_for_best_model, task),
    )
    return config, train_ds, validation


def save(
    model: nn.Module,
    family: Family,
    tokenizer: Any,
    manifest: Manifest,
    base_dir: Path,
    staged: Path,
    card: str | None = None,
) -> None:
    """The model, or the adapter with its frozen base in base/; the tokenizer; the manifest;
    the model card (README.md)."""
    METHODS[manifest.method].save(model, family, tokenizer, base_dir, staged)
    tokenizer.save_pretrained(staged)
    manifest.save(staged)
    if card is not None:  # after save_pretrained, which may write a card of its own (peft)
        write_text(staged / README_FILE, card)


def recipe_entry(
    model_name: str,
    task: Task,
    params: FinetuneParams,
    args: TrainingArguments,
    family: Family,
    inputs: InputLength,
    earlier: list[dict[str, Any]],
) -> dict[str, Any]:
    """finetune's entry in the manifest's recipe: what it ran (the model card's last step)."""
    entry: dict[str, Any] = {"stage": "finetune", "ran": True, "start": model_name}
    if not any("base_model" in e for e in earlier):  # a directory bertfit did not write
        entry["base_model"] = base_model_info(model_name)
    return entry | {
        "task": task.name,
        "family": family.name,
        "method": params.method,
        "batch_size": core.effective_batch_size(args),
        "optimizer": params.optimizer,
        "adafactor_relative_step": params.adafactor_relative_step,
        "learning_rate": params.learning_rate,
        "lr_scheduler_type": params.lr_scheduler_type,
        "warmup_ratio": params.warmup_ratio,
        "warmup_steps": params.warmup_steps,
        "layer_decay": params.layer_decay,
        "seed": params.seed,
        "max_seq_length": inputs.max_seq_length,
        "truncation": params.truncation,
        "head_tokens": inputs.head_tokens,
    }


def finetune_plan(
    model_name: str,
    task: Task,
    params: FinetuneParams,
    args: TrainingArguments,
    family: Family,
    head: HeadSpec | None,
    train_ds: Any,
    validation: ValidationSet,
    length: TrainingLength,
    inputs: InputLength,
) -> str:
    """The training-plan log line: data, steps and why, validation, truncation, family, head,
    method, selection."""
    validation_every = (
        f"every {length.eval_steps} steps" if length.eval_steps is not None else "each epoch"
    )
    patience = params.early_stopping_patience
    return core.plan_line(
        f"finetune {model_name} on {task.name}",
        args,
        len(train_ds),
        f"{len(train_ds)} train / {len(validation.dataset)} validation examples",
        epochs=f"{length.epochs:g} of {length.steps_per_epoch} steps ({length.reason})",
        validation=validation_every,
        early_stopping=f"after {patience} validations not kept" if patience else "off",
        layer_decay=params.layer_decay,
        truncation=f"{params.truncation} at {inputs.max_seq_length} tokens"
        + (f" (head {inputs.head_tokens})" if params.truncation == "head_tail" else "")
        + f", {100 * inputs.share_truncated:.0f} % of train texts cut",
        family=family.name,
        head=family.head_name(head),
        method=params.method,
        selected_on=validation.metric
        + (
            f", the latest within {tolerance_text(params.selection_tolerance)} of the best"
            if params.selection_tolerance
            else ", the best"
        ),
    )


def tolerance_text(tolerance: float | str) -> str:
    return "one standard error" if tolerance == "auto" else f"{tolerance:g}"


def finetune_metrics(
    selection: Selection,
    started: dict[str, bool],
    params: FinetuneParams,
    trainer: Any,
    trained: nn.Module,
    output: Any,
    train_examples: int,
    length: TrainingLength,
    inputs: InputLength,
) -> dict[str, Any]:
    """The stage's record: the selected epoch's validation scores, where training started from,
    the trainable share and optimiser state, the run's length, input length and speed
    (metrics.json; the strings and the speed go to run.json, reporting.split_record)."""
    best = selection.best
    return {
        "validation": {k: v for k, v in best.items() if k not in ("step", "epoch")},
        "best_epoch": best["epoch"],
        "best_step": best["step"],
        "selected_on": selection.key,
        "peak_step": selection.peak["step"],
        "peak_value": selection.peak[selection.key],
        "selection_margin": selection.margin(),
        **started,
        "method": params.method,
        **trainable_report(trained, trainer.optimizer),
        "train_examples": train_examples,
        "train_steps": output.global_step,
        "train_epochs": round(trainer.state.epoch or 0.0, 3),
        "planned_epochs": length.epochs,
        "stopped_early": output.global_step < length.steps,
        "learning_rate": params.learning_rate,
        "max_seq_length": inputs.max_seq_length,
        "head_tokens": inputs.head_tokens,
        "train_share_over_model_max_seq_length": round(inputs.share_over_configured, 4),
        "train_share_truncated": round(inputs.share_truncated, 4),
        "world_size": trainer.args.world_size,
        "train_runtime_s": output.metrics["train_runtime"],
        "train_examples_per_s": output.metrics["train_samples_per_second"],
    }


def finetune_callbacks(params: FinetuneParams, selection: Selection) -> list[TrainerCallback]:
    """Early stopping, when a patience is set."""
    if params.early_stopping_patience is None:
        return []
    return [EarlyStopping(selection, params.early_stopping_patience)]


def validation_selection(
    family: Any,
    tokenizer: Any,
    config: Any,
    validation: ValidationSet,
    collator: Any,
    params: FinetuneParams,
) -> Selection:
    """What keeps the best validation (within finetune.selection_tolerance of the peak)."""
    return Selection(
        [validation],
        lambda t: family.scorer(t, tokenizer, config),
        collator,
        params.per_device_eval_batch_size,
        tolerance=params.selection_tolerance,
    )


@dataclass
class FinetuneRun:
    """What finetune's set-up prepared for its run and its save: the model's family, tokenizer
    and head, the input length and how texts became inputs, the scoring config, the train and
    validation sets, the selection, the run's length and arguments, the trainer (the model in
    it) with its DVCLive log, the checkpoint to resume from, where training started from, the
    frozen base's fingerprint, and the work directory (the frozen base in its base/)."""

    model_name: str
    task: Task
    params: FinetuneParams
    family: Family
    tokenizer: Any
    head: HeadSpec | None
    inputs: InputLength
    prep: Preprocessing
    config: dict[str, Any]
    train_ds: Any
    validation: ValidationSet
    selection: Selection
    length: TrainingLength
    args: TrainingArguments
    trainer: Any
    live: LiveLog
    resume: str | None
    started: dict[str, bool]
    fingerprint: str | None
    work_dir: Path


def finetune(
    model_name: str,
    task: Task,
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    params: FinetuneParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path | None = None,
    extra_callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Fine-tune `model_name` on train, pick the best epoch on validation, save to output_dir.
    With checkpoint_dir, a killed run resumes from its last checkpoint (training.checkpoints).
    extra_callbacks see each validation too (bertfit.search reports them to its pruner)."""
    params = chosen_method(params, model_name, family_for(model_name), task, train_df)
    loop = METHODS[params.method].loop
    if loop is not None:  # a method with a training loop of its own, not the Trainer's
        args = (model_name, task, train_df, validation_df, params, max_seq_length)
        return own_loop(loop)(*args, output_dir, report_dir)
    run = prepare_finetune(
        model_name,
        task,
        train_df,
        validation_df,
        params,
        max_seq_length,
        output_dir,
        report_dir,
        checkpoint_dir,
        extra_callbacks=extra_callbacks,
    )
    output = train_finetune(run)
    if not run.trainer.is_world_process_zero():
        return {}
    return save_finetune(run, output, output_dir, report_dir, checkpoint_dir)


def prepare_finetune(
    model_name: str,
    task: Task,
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    params: FinetuneParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path | None = None,
    arguments: Callable[[TrainingArguments], TrainingArguments] | None = None,
    extra_callbacks: Sequence[TrainerCallback] = (),
) -> FinetuneRun:
    """The set-up: the model as the method trains it, the train and validation sets, the
    selection, the run's length and the trainer. `arguments` changes the stage's
    TrainingArguments before the trainer is built (a benchmark's fixed steps, no validation)."""
    check_writable(output_dir.parent, report_dir, (checkpoint_dir or output_dir).parent)
    set_seed(params.seed)
    family = family_for(model_name)
    tokenizer = load_tokenizer(model_name)
    head = head_spec(params)
    # one work directory, the same path on every process when launched with accelerate/torchrun
    work_dir = output_dir.parent / f".{output_dir.name}-work"
    model, inputs, started, fingerprint = finetune_model(
        model_name, task, params, max_seq_length, train_df, (family, tokenizer, head), work_dir
    )
    prep = preprocessing(params, inputs.max_seq_length, inputs.head_tokens)
    encoder = family.encoder(tokenizer, prep)
    with phase("tokenising"):
        config, train_ds, validation = labelled_sets(
            family, encoder, tokenizer, task, train_df, validation_df, params
        )
    collator = family.collator(tokenizer, prep)
    selection = validation_selection(family, tokenizer, config, validation, collator, params)
    resumable = checkpoint_dir is not None
    args = finetune_arguments(params, checkpoint_dir or work_dir, resumable)
    length = training_length(params, args, len(train_ds))
    args = finetune_arguments(params, checkpoint_dir or work_dir, resumable, length)
    if arguments is not None:
        args = arguments(args)
    data = [str(inputs.max_seq_length).encode(), *frame_bytes(train_df, validation_df)]
    resume, _ = stage_resume(args, checkpoint_dir, model_name, params, data)
    live = LiveLog(report_dir / LIVE_DIR, "finetune", selected_on=selection.key)
    callbacks = [*finetune_callbacks(params, selection), live, *extra_callbacks]
    extra = {"selection": selection, "callbacks": callbacks}
    trainer = core.stage_trainer(params, args, model, train_ds, collator, tokenizer, **extra)
    return FinetuneRun(
        model_name,
        task,
        params,
        family,
        tokenizer,
        head,
        inputs,
        prep,
        config,
        train_ds,
        validation,
        selection,
        length,
        args,
        trainer,
        live,
        resume,
        started,
        fingerprint,
        work_dir,
    )


def finetune_model(
    model_name: str,
    task: Task,
    params: FinetuneParams,
    max_seq_length: int,
    train_df: pd.DataFrame,
    loaded: tuple[Family, Any, HeadSpec | None],
    work_dir: Path,
) -> tuple[nn.Module, InputLength, dict[str, bool], str | None]:
    """The family's classifier as the method trains it (its frozen base, if any, in
    work_dir's base/), the input length read from the train texts, where training starts from
    (the target's multitask head or prompt), and the base's fingerprint. `loaded`: the
    family, the tokenizer and the head spec."""
    family, tokenizer, head = loaded
    method = METHODS[params.method]
    model = family.classifier(model_name, task, head)
    check_max_seq_length(model.config, max_seq_length, model_name)
    # where training starts from, for metrics.json: the multitask head, the multitask prompt
    started = {
        "head_from_multitask": start_from_multitask(params, family, model, model_name, task, head)
    }
    fingerprint = method.fingerprint(model)
    with phase("tokenising"):  # counting tokens: is the text long for max_seq_length?
        inputs = input_length(params, tokenizer, train_df, max_seq_length, model.config, task.name)
    model, started["prompt_from_multitask"] = method.wrap(
        model,
        family,
        params,
        model_name,
        task,
        head,
        inputs.max_seq_length,
        work_dir / BASE_DIR,
    )
    return model, inputs, started, fingerprint


def train_finetune(run: FinetuneRun) -> TrainOutput:
    """The run: the plan logged, then training from the last checkpoint if any, validated as
    it goes, the kept step's weights restored (training.trainer.fit)."""
    log.info(
        finetune_plan(
            run.model_name,
            run.task,
            run.params,
            run.args,
            run.family,
            run.head,
            run.train_ds,
            run.validation,
            run.length,
            run.inputs,
        )
    )
    output = core.fit(run.trainer, run.resume)
    run.trainer.accelerator.wait_for_everyone()
    return output


def save_finetune(
    run: FinetuneRun,
    output: TrainOutput,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path | None,
) -> dict[str, Any]:
    """The save: the kept model (module-level `save`) with its manifest (the recipe so far
    and this run's entry, the calibration's temperature) and model card, the work directory
    and checkpoints removed, the reports written. Returns the stage's record."""
    task, params, family, tokenizer = run.task, run.params, run.family, run.tokenizer
    trainer = run.trainer
    tokenizer.model_max_length = run.inputs.max_seq_length  # pipeline() truncates to it (head)
    earlier = recipe_of(Path(resolve_model_name(run.model_name)))
    entry = recipe_entry(run.model_name, task, params, run.args, family, run.inputs, earlier)
    manifest = finetune_manifest(
        family, run.prep, task, run.head, run.config, params.method, run.fingerprint
    )
    manifest = replace(manifest, recipe=[*earlier, entry])
    trained = trainer.accelerator.unwrap_model(trainer.model)
    metrics = finetune_metrics(
        run.selection,
        run.started,
        params,
        trainer,
        trained,
        output,
        len(run.train_ds),
        run.length,
        run.inputs,
    )
    metrics["validation_examples"] = len(run.validation.dataset)
    if task.problem == "classification":
        with phase("calibration"):
            metrics["calibration"] = validation_calibration(run.selection, trained, run.args.bf16)
        manifest = replace(manifest, temperature=metrics["calibration"]["temperature"])
    # the card's values are metrics.json's and run.json's, read as they will be read
    card = model_card(manifest, task, json_values(metrics))

    base_dir = run.work_dir / BASE_DIR
    with phase("saving"):
        core.write_model_dir(
            output_dir,
            lambda staged: save(trained, family, tokenizer, manifest, base_dir, staged, card),
        )
    shutil.rmtree(run.work_dir, ignore_errors=True)
    clear_checkpoints(checkpoint_dir)
    keys = (f"validation.{run.selection.key}", *METRIC_KEYS)
    core.write_reports(report_dir, metrics, keys, params, run.live)
    headline(finetune_headline(task, run.selection, metrics))
    return metrics


def chosen_method(
    params: FinetuneParams, model_name: str, family: Family, task: Task, train_df: pd.DataFrame
) -> FinetuneParams:
    """The params with the method this train set gets (training.budget.tuning_method: the
    few-labels switch), said once in the log."""
    rows = len(drawn(train_df, task, "train", params.max_train_samples, params.seed))
    name, why = method_choice(params, model_name, family, task, rows)
    if name == params.method:
        return params
    log.info("finetune.method %s -> %s: %s", params.method, name, why)
    return params.model_copy(update={"method": name})


def method_choice(
    params: FinetuneParams, model_name: str, family: Family, task: Task, rows: int
) -> tuple[str, str]:
    """The method finetune trains `model_name` with on `rows` train rows, and why
    (training.budget.tuning_method, told whether the model holds a multitask head of `task`);
    bertfit search asks it too, so its trials train what the pipeline would."""
    heads = Path(resolve_model_name(model_name)) / MANIFEST_FILE
    multitask = heads.is_file() and task.name in read_manifest(heads.parent).heads
    return tuning_method(params, family, task, head_spec(params), rows, multitask)


def own_loop(name: str) -> Callable[..., dict[str, Any]]:
    """A method's own training loop (models.methods' `loop`); imported on use, because each
    builds on this module's steps (manifest, selection, saving)."""
    if name == "contrastive":
        from bertfit.training.contrastive import finetune_contrastive

        return finetune_contrastive
    raise ValueError(f"no training loop {name!r}; known: ['contrastive']")


def validation_calibration(selection: Selection, model: nn.Module, bf16: bool) -> dict[str, Any]:
    """The temperature that calibrates the kept model's probabilities on the validation split
    (bertfit.calibration), with the validation ECE before and after it."""
    (validation,) = selection.sets
    labels, scores = selection.set_scores(model, validation, bf16)
    record = calibration_record(scores, labels, fit_temperature(scores, labels))
    log.info(
        "calibration on validation: temperature %.3f, ECE %.4f -> %.4f",
        record["temperature"],
        record["ece_uncalibrated"],
        record["ece"],
    )
    return {k: record[k] for k in ("temperature", "ece_uncalibrated", "ece")}


def finetune_headline(task: Task, selection: Selection, metrics: dict[str, Any]) -> str:
    """`mr validation accuracy 0.813 ± 0.011 at step 428 of 428`: the kept validation score
    (± its bootstrap standard error, when selection estimated one)."""
    key = selection.key
    value = metrics["validation"][key]
    se = metrics["validation"].get(f"{key}{SE_SUFFIX}")
    spread = f" ± {se:.3f}" if se is not None else ""
    return (
        f"{task.name} validation {key} {value:.3f}{spread} at step {metrics['best_step']} of "
        f"{metrics['train_steps']}"
    )
