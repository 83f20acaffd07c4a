"""The one Trainer wiring: every training stage (pretrain, multitask, finetune) goes through here.

- `training_arguments`: TrainingArguments from the shared TrainingParams (params.py), the
  machine's settings (bertfit.hardware: bf16 decided once, gloo for CPU DDP, no integrations)
  and the few stage-specific ones (steps or epochs, evaluation and checkpoint intervals).
- `BertfitTrainer`: the HF Trainer with layer-wise learning-rate decay (training.optim), both
  Adafactor modes, optional task-homogeneous batches with per-task losses (multitask), and
  model selection on validation through the model family's `score` (training.selection).
- `fit`: train, score the last step if no evaluation fell on it, restore the best weights.
- `plan_line`: the training summary logged before training (effective batch with world size).
- `write_model_dir`, `pass_through`, `write_reports`, `skip_stage`: the atomic model
  directory, the disabled stage's copy, metrics.json / run.json (the training curves:
  training.live, DVCLive), and all of them for a stage that does not run.
- `effective_batch_size`, `steps_per_epoch`: the examples in one optimisation step and the
  steps in one epoch, as the Trainer counts them.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from peft import PeftModel
from pydantic import BaseModel
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Sampler
from transformers import (
    Adafactor,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.optimization import AdafactorSchedule
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import TrainOutput
from transformers.utils import SAFE_WEIGHTS_NAME

from bertfit import terminal
from bertfit.hardware import device_arguments, keep_freed_memory, use_bf16
from bertfit.models.dropout import use_fast_dropout
from bertfit.models.family import family_in
from bertfit.models.loading import LOAD_KWARGS, load_tokenizer, resolve_model_name
from bertfit.models.manifest import Manifest
from bertfit.params import TrainingParams
from bertfit.phases import duration, elapsed_s, headline, phase
from bertfit.reporting import make_readable, write_record
from bertfit.training.live import LIVE_DIR, LiveLog, empty_log
from bertfit.training.optim import layerwise_param_groups
from bertfit.training.selection import Selection

log = logging.getLogger(__name__)


def training_arguments(params: TrainingParams, output_dir: Path, **stage: Any) -> TrainingArguments:
    """The stage's TrainingArguments: shared params and the machine's settings, then `stage`'s
    (which override them)."""
    warmup = params.warmup_steps if params.warmup_steps is not None else params.warmup_ratio
    shared = dict(
        output_dir=str(output_dir),
        seed=params.seed,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        # transformers 5: a float in [0, 1) is a ratio of the steps, an int a number of steps
        warmup_steps=warmup,
        lr_scheduler_type=params.lr_scheduler_type,
        per_device_train_batch_size=params.per_device_train_batch_size,
        per_device_eval_batch_size=params.per_device_eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        logging_steps=params.logging_steps,
        # a NaN or infinite step loss is logged as it is (the Trainer's filter would log the
        # mean of the finite ones): BertfitTrainer.log stops the run on it
        logging_nan_inf_filter=False,
        # no bar off a terminal (terminal.progress_bars); each logging step is then one log line
        # (LogLines), as the bar's own tqdm.write gives it on a terminal
        disable_tqdm=not terminal.progress_bars(),
        dataloader_num_workers=0,
        # adamw: the Trainer's default, torch's fused AdamW; adafactor: its fixed-rate mode
        # (relative-step mode is set up by BertfitTrainer.create_optimizer)
        **({"optim": "adafactor"} if params.optimizer == "adafactor" else {}),
        **device_arguments(use_bf16(params.mixed_precision)),
    )
    return TrainingArguments(**(shared | stage))


class TrainingDiverged(ValueError):
    """A non-finite training loss or weight (BertfitTrainer.diverged): a ValueError, so a stage
    reports it in one line (cli.user_errors)."""


class BertfitTrainer(Trainer):
    """Trainer with layer-wise decay, both Adafactor modes, task batches and selection.

    The optimiser gets one learning rate per encoder depth (training.optim). Its class comes from
    TrainingArguments.optim (AdamW, or Adafactor with a fixed rate); `adafactor_relative_step`
    is Adafactor's other mode, which the Trainer cannot set up from arguments: lr=None,
    relative_step, scale_parameter and warmup_init, with AdafactorSchedule standing in for the
    schedule (it only reports the step size). With `batch_sampler`, training batches come from
    it (multitask: each batch from one task, tagged `task`, whose loss is logged per task).
    With `selection`, `evaluate` scores validation through the family and keeps the best.
    """

    def __init__(
        self,
        *args: Any,
        layer_decay: float,
        adafactor_relative_step: bool = False,
        selection: Selection | None = None,
        batch_sampler: Sampler[list[int]] | None = None,
        stage: str = "finetune",
        **kwargs: Any,
    ) -> None:
        self.stage = stage  # the params section, named in a divergence's message
        self.layer_decay = layer_decay
        self.adafactor_relative_step = adafactor_relative_step
        self.selection = selection
        self.batch_sampler = batch_sampler
        self.task_loss: dict[str, list] = {}  # task -> [summed detached loss, batches]
        if selection is not None:  # the Trainer insists on one when it is to evaluate
            kwargs.setdefault("eval_dataset", {s.task.name: s.dataset for s in selection.sets})
        super().__init__(*args, **kwargs)
        if self.args.disable_tqdm:  # print()s each log dict: a line in the log, not a record
            self.remove_callback(PrinterCallback)
            self.add_callback(LogLines())

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        """The Trainer's save, less the pickled TrainingArguments it writes beside the weights
        (into every checkpoint): nothing reads them back, and bertfit keeps no pickle.

        A model that is no PreTrainedModel (multitask's heads around one shared encoder) has
        its state dict saved by the Trainer with safetensors, which refuses tensors held under
        several names; each is saved once, and loading it back (`_load_from_checkpoint`,
        which checks the keys) fills every name that shares it."""
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None and not isinstance(model, SAVED_BY_TRAINER):
            state_dict = unshared(model.state_dict())
        super()._save(output_dir, state_dict)
        (Path(output_dir or self.args.output_dir) / TRAINING_ARGS_NAME).unlink(missing_ok=True)

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: torch.nn.Module | None = None
    ) -> None:
        """Resume weights saved by `_save`: the Trainer's own load for a PreTrainedModel; for
        another module, every tensor it saved (each once) must be one the model has, and
        every name the model has must be filled, itself or through the tensor it shares."""
        unwrapped = self.accelerator.unwrap_model(model or self.model)
        if isinstance(unwrapped, SAVED_BY_TRAINER):  # adapters: adapter_model.safetensors
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = load_file(Path(resume_from_checkpoint) / SAFE_WEIGHTS_NAME)
        expected = unshared(unwrapped.state_dict())
        if saved.keys() != expected.keys():
            missing, extra = (
                sorted(expected.keys() - saved.keys()),
                sorted(saved.keys() - expected.keys()),
            )
            raise RuntimeError(
                f"{resume_from_checkpoint}: its weights do not fit the model (missing "
                f"{missing[:3]}, unexpected {extra[:3]}); delete the checkpoint to start over"
            )
        unwrapped.load_state_dict(saved, strict=False)
        return None

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """A checkpoint's weights must fill the whole model: a key the Trainer reports missing
        is fine only when it shares its tensor with a loaded one (the MLM decoder tied to the
        input embeddings, which safetensors stores once); anything else is an error, where
        the Trainer would only warn and train on with fresh weights."""
        state = self.accelerator.unwrap_model(self.model).state_dict()
        loaded = {tensor_key(t) for k, t in state.items() if k not in load_result.missing_keys}
        untied = [k for k in load_result.missing_keys if tensor_key(state[k]) not in loaded]
        if untied or load_result.unexpected_keys:
            raise RuntimeError(
                f"the checkpoint does not fit the model: missing {untied[:3]}, unexpected "
                f"{load_result.unexpected_keys[:3]}; delete the checkpoint folder to start over"
            )
        if load_result.missing_keys:
            log.info(
                "resumed weights: %d tied tensors filled from the ones they share (%s)",
                len(load_result.missing_keys),
                ", ".join(load_result.missing_keys[:2]),
            )

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, with the selection's state written into it first: the
        Trainer writes trainer_state.json last, which is what marks a checkpoint complete."""
        with phase("checkpoints"):
            if self.selection is not None and self.args.should_save:
                step = self.state.global_step
                self.selection.save_state(Path(self._get_output_dir(trial)) / f"checkpoint-{step}")
            super()._save_checkpoint(model, trial)

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

    def get_train_dataloader(self) -> DataLoader:
        if self.batch_sampler is None:
            return super().get_train_dataloader()
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=self.batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        task = inputs.get("task")
        routes = getattr(self.accelerator.unwrap_model(model), "routes_tasks", False)
        if task is not None and not routes:
            # one seq2seq model for every task (the prefix tells them apart): it takes no `task`
            inputs = {k: v for k, v in inputs.items() if k != "task"}
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if task is not None:
            total = self.task_loss.setdefault(task, [0.0, 0])
            total[0] = total[0] + loss.detach()  # summed on the device: no sync per step
            total[1] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):  # the window's mean: NaN stays NaN
            raise self.diverged(f"the training loss is {loss}")
        if "loss" in logs and self.task_loss:  # a training log: add each task's mean loss
            for task, (summed, batches) in sorted(self.task_loss.items()):
                logs[f"loss_{task}"] = round(float(summed) / batches, 4)
            self.task_loss = {}
        super().log(logs, start_time)

    def diverged(self, what: str) -> TrainingDiverged:
        """The error that stops a diverged run, with the likely causes and their params."""
        state = self.state
        precision = (
            f", or train in fp32 ({self.stage}.mixed_precision: no; now bf16 autocast)"
            if self.args.bf16
            else ""
        )
        return TrainingDiverged(
            f"{self.stage}: {what} at step {state.global_step}/{state.max_steps}: training "
            f"diverged, and nothing was saved or reported. Lower {self.stage}.learning_rate "
            f"(now {self.args.learning_rate:g}; full fine-tuning of BERT-size models uses 1e-5 "
            f"to 1e-4, prompt tuning up to 0.3){precision}"
        )

    def check_weights(self) -> None:
        """Stop before a model with a non-finite weight is saved (diverged)."""
        model = self.accelerator.unwrap_model(self.model)
        for name, weight in model.named_parameters():
            if not bool(torch.isfinite(weight).all()):
                raise self.diverged(f"the weight {name} holds non-finite values")

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        with phase("validation"):
            if self.selection is None:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            return self.select(metric_key_prefix)

    def select(self, metric_key_prefix: str) -> dict[str, float]:
        """Score the selection's validation sets, keep the best weights so far, log the row."""
        model = self.accelerator.unwrap_model(self.model)
        # scored under the autocast it trains with
        row = {"step": self.state.global_step, "epoch": self.state.epoch}
        row |= self.selection.scores(model, self.args.bf16)
        self.selection.record(model, row)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in row.items() if k != "step"}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


class LogLines(TrainerCallback):
    """Each logging step as one log line a person reads, where the Trainer without
    its bar would print() the dict:

        step 250/428 (58 %), 3m10s elapsed, ~2m15s left: loss 0.426, lr 2.1e-05
        validation at step 428/428 (100 %), 5m01s elapsed: accuracy 0.813 ± 0.011, loss 0.407

    Times count from this run's first step (a resumed run: from its resume); what is left is
    the time per step so far times the steps to go, validations included."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_step = 0

    def on_train_begin(self, args: TrainingArguments, state: Any, control: Any, **_: Any) -> None:
        self.started = time.perf_counter()
        self.first_step = state.global_step

    def on_log(
        self, args: TrainingArguments, state: Any, control: Any, logs: Any = None, **_: Any
    ) -> None:
        if state.is_local_process_zero and logs:
            elapsed = time.perf_counter() - self.started
            line = log_line(state.global_step, state.max_steps, self.first_step, elapsed, logs)
            if line:
                log.info(line)


def log_line(step: int, max_steps: int, first_step: int, elapsed: float, logs: dict) -> str:
    """One logging step's line: progress and times, then the values as numbers (empty for a
    log with none of them)."""
    progress = f"{step}/{max_steps} ({100 * step / max_steps:.0f} %)" if max_steps else f"{step}"
    clock = f"{duration(elapsed)} elapsed"
    if "loss" in logs:
        done = step - first_step
        if done > 0 and max_steps > step:
            clock += f", ~{duration(elapsed / done * (max_steps - step))} left"
        tasks = ", ".join(
            f"{k.removeprefix('loss_')} {number(v)}"
            for k, v in sorted(logs.items())
            if k.startswith("loss_")
        )
        loss = f"loss {number(logs['loss'])}" + (f" ({tasks})" if tasks else "")
        rate = logs.get("learning_rate")
        return f"step {progress}, {clock}: {loss}" + (f", lr {rate:.2g}" if rate else "")
    scores = {  # the error rate is 1 - accuracy: said once
        k.removeprefix("eval_"): v
        for k, v in logs.items()
        if k.startswith("eval_") and not k.endswith(("epoch", "error_rate"))
    }
    if scores:
        shown = ", ".join(
            f"{k} {number(v)}" + (f" ± {number(scores[k + '_se'])}" if k + "_se" in scores else "")
            for k, v in scores.items()
            if not k.endswith("_se")
        )
        return f"validation at step {progress}, {clock}: {shown}"
    if "train_runtime" in logs:  # the Trainer's closing summary (the speed is in run.json)
        return (
            f"training finished at step {progress} in {duration(logs['train_runtime'])}, mean "
            f"loss {number(logs.get('train_loss', float('nan')))}"
        )
    return ""


def number(value: float) -> str:
    """A logged value with 4 significant digits: 0.4262, 7.182, 1315, 2.1e-05."""
    return f"{value:.4g}"


def quiet_trainer_plan(record: logging.LogRecord) -> bool:
    """False for the Trainer's own training plan (its `***** Running training *****` block and
    the max_steps note): each stage logs its plan once, in one line (plan_line)."""
    message = record.getMessage()
    return not (
        message.startswith("***** Running training")
        or (message.startswith("  ") and " = " in message)
        or message.startswith("max_steps is given")
    )


# what the Trainer saves and loads itself (save_pretrained / its adapter load); anything else
# (multitask's heads, TaskAdapters) goes through `_save` / `_load_from_checkpoint` below
SAVED_BY_TRAINER = (PreTrainedModel, PeftModel)


def tensor_key(tensor: torch.Tensor) -> tuple[int, int]:
    """Where a tensor's data lives: equal for tensors that share it (tied weights)."""
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset()


def unshared(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with each tensor under its first name only (safetensors needs that)."""
    seen: set[tuple[int, int]] = set()
    kept = {}
    for name, tensor in state_dict.items():
        key = tensor_key(tensor)
        if key not in seen:
            seen.add(key)
            kept[name] = tensor
    return kept


def stage_trainer(
    params: TrainingParams,
    args: TrainingArguments,
    model: torch.nn.Module,
    train_dataset: Any,
    collator: Callable[[list[dict]], dict[str, Any]],
    tokenizer: Any,
    **extra: Any,
) -> BertfitTrainer:
    """The stage's BertfitTrainer, its optimiser settings read from the stage's params (and the
    process's allocator set to reuse freed memory: hardware.keep_freed_memory). On a
    CPU the model's dropout draws its masks the cheaper way (models.dropout), in place."""
    keep_freed_memory()
    if args.device.type == "cpu":
        use_fast_dropout(model)
    trainer_log = logging.getLogger("transformers.trainer")
    if quiet_trainer_plan not in trainer_log.filters:
        trainer_log.addFilter(quiet_trainer_plan)
    return BertfitTrainer(
        model=model,
        args=args,
        stage=type(params).__name__.removesuffix("Params").lower(),
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        layer_decay=params.layer_decay,
        adafactor_relative_step=params.adafactor_relative_step,
        **extra,
    )


def fit(trainer: BertfitTrainer, resume: str | None = None) -> TrainOutput:
    """Train (from checkpoint `resume`, with its selection state); with a selection, score the
    last step too and restore the best weights."""
    if resume is not None and trainer.selection is not None:
        trainer.selection.load_state(Path(resume))
    with phase("training"):  # less the validation passes and checkpoints within it
        output = trainer.train(resume_from_checkpoint=resume)
    selection = trainer.selection
    if selection is not None:
        if not selection.history or selection.history[-1]["step"] != output.global_step:
            trainer.evaluate()  # the last steps, when no evaluation fell on the final one
        best = selection.restore(trainer.accelerator.unwrap_model(trainer.model))
        peak = selection.peak
        if peak is not None and peak["step"] != best["step"]:
            log.info(
                "kept step %d (validation %s %.4f), the latest within %.4f of the best %.4f "
                "(step %d)",
                best["step"],
                selection.key,
                best[selection.key],
                selection.margin(),
                peak[selection.key],
                peak["step"],
            )
        log.info(
            "kept the weights of step %d: validation %s %s",
            best["step"],
            selection.key,
            number(best[selection.key]),
        )
    trainer.check_weights()
    return output


def effective_batch_size(args: TrainingArguments) -> int:
    """Examples in one optimisation step: per device, times accumulated batches, times
    processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def steps_per_epoch(args: TrainingArguments, examples: int, batch_size: int | None = None) -> int:
    """Optimisation steps in one pass over `examples` (as the Trainer counts them), at
    `batch_size` per device (default: the arguments')."""
    batch_size = batch_size or args.per_device_train_batch_size
    batches = math.ceil(examples / (batch_size * args.world_size))
    return max(batches // args.gradient_accumulation_steps, 1)


def planned_steps(args: TrainingArguments, examples: int) -> int:
    """Optimisation steps the Trainer will take: max_steps, or epochs of the examples."""
    if args.max_steps > 0:
        return args.max_steps
    return math.ceil(steps_per_epoch(args, examples) * args.num_train_epochs)


def plan_line(stage: str, args: TrainingArguments, examples: int, data: str, **details: Any) -> str:
    """The one training-plan summary: data, steps, effective batch (world size included)."""
    effective = effective_batch_size(args)
    extra = "".join(f"; {k.replace('_', ' ')} {v}" for k, v in details.items())
    warn_long_warmup(stage, args, planned_steps(args, examples))
    return (
        f"{stage}: {data}; {planned_steps(args, examples)} optimisation steps of {effective} "
        f"examples ({args.per_device_train_batch_size} per device x "
        f"{args.gradient_accumulation_steps} accumulated x {args.world_size} processes); "
        f"lr {args.learning_rate:g}{extra}; "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}, bf16 {args.bf16}"
    )


def warmup_outlasts_run(warmup_steps: int | None, steps: int) -> bool:
    """A warm-up in steps as long as the run: the rate never reaches learning_rate. The stage
    warns at its plan line (warn_long_warmup), `bertfit plan` among its warnings."""
    return warmup_steps is not None and warmup_steps >= steps > 0


def warn_long_warmup(stage: str, args: TrainingArguments, steps: int) -> None:
    """Warm-up as long as the run: the rate never reaches learning_rate (warmup_steps 100000 on
    a 12-step run trains at almost nothing, with no error anywhere)."""
    warmup = args.warmup_steps
    if isinstance(warmup, float) and warmup < 1:  # transformers 5: a ratio of the steps
        return
    if warmup_outlasts_run(warmup, steps):
        section = stage.split()[0]
        log.warning(
            "%s: warm-up of %d steps is as long as the run (%d steps): the learning rate never "
            "reaches %s.learning_rate (%g). Set %s.warmup_steps below %d, or use warmup_ratio",
            stage,
            warmup,
            steps,
            section,
            args.learning_rate,
            section,
            steps,
        )


def write_model_dir(output_dir: Path, write: Callable[[Path], None]) -> None:
    """Write a model directory atomically: `write` fills a staging directory, then it moves in.

    A killed stage leaves the previous directory or none, never a half-written one; the staging
    directory a kill -9 left behind (no cleanup runs then) is removed by the next run.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{output_dir.name}-staging-"
    for stale in output_dir.parent.glob(f"{prefix}*"):
        log.warning("removing %s, left by a run killed while saving", stale)
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=prefix) as work:
        staged = Path(work) / "model"
        staged.mkdir()
        write(staged)
        make_readable(staged)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.move(str(staged), output_dir)


def pass_through(model_name: str, output_dir: Path, manifest: Manifest) -> None:
    """A disabled stage: its input model, unchanged, where the next stage expects it.

    A local directory (or one inside a wheel) is copied; a hub id is fetched once into a
    standard directory. The manifest says which stage passed it on.
    """
    source = Path(resolve_model_name(model_name))

    def write(staged: Path) -> None:
        if source.is_dir():  # a Trainer's pickled arguments, if the source has them, stay out
            ignore = shutil.ignore_patterns(TRAINING_ARGS_NAME)
            shutil.copytree(source, staged, dirs_exist_ok=True, ignore=ignore)
        else:
            load_tokenizer(model_name).save_pretrained(staged)
            # the family's bare model (a seq2seq model keeps its LM head: it writes label words)
            auto = family_in(manifest, source).auto_class
            auto.from_pretrained(model_name, **LOAD_KWARGS).save_pretrained(staged)
        manifest.save(staged)

    write_model_dir(output_dir, write)


def write_reports(
    report_dir: Path,
    record: dict[str, Any],
    metric_keys: Iterable[str],
    params: BaseModel | None = None,
    live: LiveLog | None = None,
) -> None:
    """metrics.json (`metric_keys`: the numbers a reviewer compares) and run.json (the whole
    record, with the stage's params and its wall time so far; reporting.write_record), and the
    end of the stage's DVCLive log (`live`; a stage that did not train writes its empty log
    itself, live.empty_log)."""
    run = dict(record)
    seconds = elapsed_s()
    if seconds is not None:
        run["wall_s"] = seconds
    if params is not None:  # logged nowhere else: a stage's log names the file instead
        run["params"] = params.model_dump(mode="json")
    write_record(report_dir, run, metric_keys)
    if live is not None:
        live.end(record.get("best_step"))


def skip_stage(
    model_name: str,
    output_dir: Path,
    manifest: Manifest,
    report_dir: Path,
    record: tuple[dict[str, Any], Iterable[str], BaseModel | None],
    curves: Sequence[str],
    why: str,
) -> dict[str, Any]:
    """A stage that does not run (pretrain's `corpus: none`, multitask disabled or without the
    target): its input model, unchanged, where the next stage expects it (pass_through), its
    reports (`record`: the metrics, metrics.json's keys, the params), each of its `curves` with
    its header only (live.empty_log), and a headline saying `why`. Returns the metrics."""
    metrics, metric_keys, params = record
    state = PartialState()
    if state.is_main_process:
        pass_through(model_name, output_dir, manifest)
        write_reports(report_dir, metrics, metric_keys, params)
        empty_log(report_dir / LIVE_DIR, manifest.stage, curves)
        headline(f"{why}: {model_name} passed through unchanged")
    state.wait_for_everyone()
    return metrics
