"""Single-task fine-tuning of the target (Sun et al. 2019, section 5.3) with the HF Trainer.

AdamW with decoupled weight decay, layer-wise learning-rate decay, warm-up then linear decay, the
paper's truncation strategies and dynamic padding. The best epoch is chosen on the validation split
and never on test: the reference code scored its "dev" set, which was the test set, every epoch.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import (
    Adafactor,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.optimization import AdafactorSchedule

from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.metrics import task_metrics
from bertfit.models.heads import load_task_head
from bertfit.models.loading import check_max_seq_length, load_classifier, load_tokenizer
from bertfit.models.pooling import ChunkCollator, HeadSpec, pooled_classifier
from bertfit.params import FinetuneParams
from bertfit.reporting import split_history, write_csv, write_json
from bertfit.training.hardware import bf16_available, device_arguments
from bertfit.training.optim import layerwise_param_groups

log = logging.getLogger(__name__)


class LayerwiseDecayTrainer(Trainer):
    """Trainer whose optimiser gets one learning rate per encoder depth (see training.optim).

    The optimiser class comes from TrainingArguments.optim (AdamW, or Adafactor with a fixed
    rate). `adafactor_relative_step` is Adafactor's other mode, which the Trainer cannot set up
    from arguments: lr=None, relative_step, scale_parameter and warmup_init, with
    AdafactorSchedule standing in for the schedule (it only reports the step size).
    """

    def __init__(
        self, *args: Any, layer_decay: float, adafactor_relative_step: bool = False, **kwargs: Any
    ) -> None:
        self.layer_decay = layer_decay
        self.adafactor_relative_step = adafactor_relative_step
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            groups = layerwise_param_groups(
                model,
                self.args.learning_rate,
                self.layer_decay,
                self.args.weight_decay,
                self.get_decay_parameter_names(model),
            )
            if self.adafactor_relative_step:
                for group in groups:  # Adafactor computes the step size itself
                    del group["lr"]
                self.optimizer = Adafactor(
                    groups, lr=None, scale_parameter=True, relative_step=True, warmup_init=True
                )
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(
                    self.args, model
                )
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.adafactor_relative_step and self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            # AdafactorSchedule asks the Adafactor itself, not accelerate's wrapper around it
            self.lr_scheduler = AdafactorSchedule(getattr(optimizer, "optimizer", optimizer))
        return super().create_scheduler(num_training_steps, optimizer)


def metrics_for(
    problem: str, positive_id: int | None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's compute_metrics for a task: metrics.task_metrics on the logits."""

    def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return task_metrics(problem, pred.label_ids, np.asarray(logits), positive_id)

    return compute_metrics


def selection_metric(params: FinetuneParams, problem: str, metric: str) -> str:
    """The validation metric that picks the best epoch: `task` is the task's own metric."""
    chosen = metric if params.metric_for_best_model == "task" else params.metric_for_best_model
    if problem == "regression" and chosen in ("accuracy", "macro_f1"):
        raise ValueError(
            f"params.yaml: finetune.metric_for_best_model {chosen!r} does not exist for a "
            "regression task; use task (Pearson) or loss"
        )
    return chosen


def training_arguments(
    params: FinetuneParams, output_dir: Path, best_metric: str | None = None
) -> TrainingArguments:
    # bf16 autocast (fp32 master weights) where the GPU or CPU has bf16 arithmetic, TF32 on GPU
    bf16 = params.mixed_precision == "auto" and bf16_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        seed=params.seed,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        num_train_epochs=params.num_train_epochs,
        per_device_train_batch_size=params.per_device_train_batch_size,
        per_device_eval_batch_size=params.per_device_eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        # transformers 5: a float in [0, 1) is a ratio of the steps, an int a number of steps
        warmup_steps=params.warmup_steps
        if params.warmup_steps is not None
        else params.warmup_ratio,
        lr_scheduler_type=params.lr_scheduler_type,
        train_sampling_strategy=params.train_sampling_strategy,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_only_model=True,
        save_total_limit=1,  # with load_best_model_at_end the best is kept as well
        load_best_model_at_end=True,
        metric_for_best_model=best_metric or selection_metric(params, "classification", "accuracy"),
        logging_steps=params.logging_steps,
        dataloader_num_workers=0,
        # adamw: the Trainer's default, torch's fused AdamW; adafactor: fixed-rate mode (see above)
        **({"optim": "adafactor"} if params.optimizer == "adafactor" else {}),
        **device_arguments(bf16),
    )


def finetune(
    model_name: str,
    labels: list[str],
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    params: FinetuneParams,
    max_seq_length: int,
    output_dir: Path,
    report_dir: Path,
    task: str | None = None,
    *,
    problem: str = "classification",
    metric: str = "accuracy",
    positive_label: str | None = None,
) -> dict[str, Any]:
    """Fine-tune `model_name` on train, pick the best epoch on validation, save to output_dir.

    With finetune.init_head_from_multitask, the head of `task` starts from the one multitask
    trained (models/multitask/multitask_heads) when the label sets match.
    """
    set_seed(params.seed)
    tokenizer = load_tokenizer(model_name)
    hierarchical = params.truncation == "hierarchical"
    # the stock HF classifier unless a feature or pooling it lacks is asked for (models.pooling)
    pooled = hierarchical or params.feature != "cls"
    if pooled:
        spec = HeadSpec(
            params.feature, params.feature_layers, params.chunk_pooling if hierarchical else None
        )
        model = pooled_classifier(model_name, labels, spec, problem)
    else:
        model = load_classifier(model_name, labels, problem)
    check_max_seq_length(model.config, max_seq_length, model_name)
    head_from_multitask = False
    if params.init_head_from_multitask and task:
        if pooled:
            log.info("the %s head is not the stock classifier: it starts fresh", task)
        else:
            head_from_multitask = load_task_head(model, Path(model_name), task, labels, problem)
    prep = Preprocessing(
        max_seq_length,
        params.truncation,
        params.head_tokens,
        params.chunk_stride if hierarchical else None,
        params.max_chunks if hierarchical else None,
    )
    encoder = Encoder(tokenizer, prep)
    if params.max_train_samples is not None and params.max_train_samples < len(train_df):
        train_df = train_df.sample(n=params.max_train_samples, random_state=params.seed)
    train_ds = encoder.labelled(train_df, labels, problem, f"{task or 'target'} [train]")
    validation_ds = encoder.labelled(
        validation_df, labels, problem, f"{task or 'target'} [validation]"
    )
    best_metric = selection_metric(params, problem, metric)

    effective_batch = params.per_device_train_batch_size * params.gradient_accumulation_steps
    steps = math.ceil(len(train_ds) / effective_batch) * math.ceil(params.num_train_epochs)
    log.info(
        "finetune %s on %d train / %d validation examples, %d labels; device %s; "
        "%s epochs, effective batch %d, about %d optimisation steps; lr %g, layer decay %g, "
        "truncation %s at %d tokens; feature %s; bf16 %s",
        model_name,
        len(train_ds),
        len(validation_ds),
        len(labels),
        "cuda" if torch.cuda.is_available() else "cpu",
        params.num_train_epochs,
        effective_batch,
        steps,
        params.learning_rate,
        params.layer_decay,
        params.truncation,
        max_seq_length,
        f"{params.feature} (last {params.feature_layers} layers)"
        if params.feature != "cls"
        else "cls",
        params.mixed_precision == "auto" and bf16_available(),
    )

    # one work directory, the same path on every process when launched with accelerate/torchrun
    work_dir = output_dir.parent / f".{output_dir.name}-work"
    args = training_arguments(params, work_dir / "checkpoints", best_metric)
    main_process = args.process_index == 0
    with args.main_process_first(desc="clearing the work directory"):
        if main_process:
            shutil.rmtree(work_dir, ignore_errors=True)
    trainer = LayerwiseDecayTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=validation_ds,
        processing_class=tokenizer,
        data_collator=(ChunkCollator if hierarchical else DataCollatorWithPadding)(
            tokenizer, pad_to_multiple_of=8 if torch.cuda.is_available() else None
        ),
        compute_metrics=metrics_for(
            problem, labels.index(positive_label) if positive_label is not None else None
        ),
        layer_decay=params.layer_decay,
        adafactor_relative_step=params.adafactor_relative_step,
    )
    train_output = trainer.train()
    history = list(trainer.state.log_history)  # before the final evaluate adds to it
    best = trainer.evaluate()  # the best epoch's model, reloaded by load_best_model_at_end

    # pipeline("text-classification") truncates to model_max_length; head-only there
    tokenizer.model_max_length = max_seq_length
    staged = work_dir / "model"
    if not pooled:
        trainer.save_model(str(staged))  # written by the main process only
    elif main_process:  # the encoder's HF directory plus the head (models.pooling)
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(staged)
        tokenizer.save_pretrained(staged)
    trainer.accelerator.wait_for_everyone()
    if not main_process:
        return {}
    encoder.prep.save(staged)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    shutil.move(str(staged), output_dir)
    shutil.rmtree(work_dir)

    losses, evals = split_history(history)
    best_epoch = next(
        (e["epoch"] for e in evals if e.get(best_metric) == best.get(f"eval_{best_metric}")),
        None,
    )
    metrics = {
        "validation": {
            k.removeprefix("eval_"): v
            for k, v in best.items()
            if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))
        },
        "best_epoch": best_epoch,
        "selected_on": best_metric,
        "head_from_multitask": head_from_multitask,
        "train_examples": len(train_ds),
        "world_size": args.world_size,
        "train_runtime_s": train_output.metrics["train_runtime"],
        "train_examples_per_s": train_output.metrics["train_samples_per_second"],
    }
    write_json(report_dir / "metrics.json", metrics)
    write_csv(report_dir / "loss.csv", losses, ["step", "epoch", "loss", "learning_rate"])
    scores = [k for k in evals[0] if k not in ("epoch", "step", "loss")] if evals else []
    eval_fields = [
        "epoch",
        "step",
        "loss",
        *(k for k in scores if not k.endswith(("runtime", "per_second"))),
    ]
    write_csv(report_dir / "validation.csv", evals, eval_fields)
    log.info("best epoch %s on validation: %s", best_epoch, metrics["validation"])
    return metrics
