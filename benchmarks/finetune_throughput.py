"""Fine-tuning and evaluation throughput: bertfit versus the Hugging Face defaults, in one run.

Training, same model, data (the target's train split), batch and machine, examples/s:
- hf_baseline: what run_classification does by default: every text padded to max_seq_length
  (`pad_to_max_length`), random batches, fp32, the Trainer's AdamW.
- hf_tuned_<precision>: what a capable user runs instead: the same Trainer with dynamic padding
  (DataCollatorWithPadding), length-grouped batches (`train_sampling_strategy:
  group_by_length`), and bertfit's precision (fp32, or bf16 autocast where the machine has it).
- bertfit_<precision>: the trainer the finetune stage's own set-up builds
  (training.finetune.prepare_finetune): the model family's classifier (its encoder's last layer
  at [CLS] only: models.last_layer) as finetune.method trains it, encoder (head+tail
  truncation) and collator (dynamic padding), the stage's arguments (training.trainer's
  `training_arguments`: length-grouped batches) and BertfitTrainer (layer-wise decay). Only what
  a benchmark must differs: a fixed number of steps at the params' batch, no validation, no
  logging, and the precision: fp32 (mixed_precision: no) and, where the CPU or GPU has bf16
  arithmetic, bf16 autocast (auto).

Evaluation, the target's test split, examples/s including tokenisation:
- hf_pipeline: `transformers.pipeline("text-classification")` with its defaults, called on the
  list of texts.
- hf_pipeline_tuned_<precision>: the same pipeline batched (batch_size = the evaluate stage's,
  so each batch is padded to its longest text), truncation=True, under the same precision.
- bertfit_<precision>: the evaluate stage's path (bertfit.evaluation): the model directory read
  back with its manifest, the recorded preprocessing, `inference.model_scores` (the
  family's collator and score, length-sorted batches under inference_mode, freed memory kept),
  in fp32 and, where the machine has it, bf16 autocast.

`<hf variant>_malloc`: the same Hugging Face run in a process with bertfit's malloc settings
(hardware.keep_freed_memory, which bertfit's stages apply): the share of bertfit's lead a
Hugging Face user gets by setting glibc's MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_ too.

`speedup` is over the Hugging Face defaults, `speedup_vs_tuned` over the tuned Hugging Face run
in the same precision, `speedup_vs_tuned_malloc` over that run with bertfit's malloc settings.

Variants alternate in rounds so machine noise hits them alike, each run in a Python process of
its own (timing.alternate).

    python benchmarks/finetune_throughput.py --steps 40 --rounds 2

Prints a table and writes it as JSON to --out (default reports/benchmarks/finetune.json).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import timing
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
    pipeline,
    set_seed,
)

from bertfit.data.tasks import Task
from bertfit.inference import model_scores
from bertfit.models.family import family_for, load_trained
from bertfit.models.loading import (
    LOAD_KWARGS,
    classifier_config,
    load_config,
    load_tokenizer,
    resolve_model_name,
)
from bertfit.models.manifest import Manifest
from bertfit.params import FinetuneParams, load
from bertfit.reporting import write_json
from bertfit.training.finetune import head_spec, prepare_finetune, preprocessing
from bertfit.training.trainer import BertfitTrainer

PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass
class Training:
    """What both training variants share: model, the target's train split, the stage's params."""

    model_name: str
    task: Task
    train: pd.DataFrame
    validation: pd.DataFrame  # the stage's set-up builds its selection on it; never scored here
    params: FinetuneParams
    max_seq_length: int

    def hf_model_and_rows(self, padding: str | bool) -> tuple[Any, list[dict[str, Any]]]:
        """The plain HF classifier and the train split tokenised as run_classification does,
        padded to max_seq_length ("max_length") or not at all (the collator pads)."""
        tokenizer = load_tokenizer(self.model_name)
        # transformers' own class as is (load_classifier would cut its last layer to [CLS])
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_name(self.model_name),
            config=classifier_config(self.model_name, self.task.labels, self.task.problem),
            **LOAD_KWARGS,
        )
        label2id = model.config.label2id
        encoded = tokenizer(
            self.train["text"].tolist(),
            padding=padding,
            max_length=self.max_seq_length,
            truncation=True,
        )
        rows = [
            {k: encoded[k][i] for k in encoded} | {"labels": label2id[label]}
            for i, label in enumerate(self.train["label"])
        ]
        return model, rows

    def baseline_trainer(self, max_steps: int, output_dir: Path) -> Trainer:
        """run_classification with its defaults, at the finetune stage's learning rate and batch."""
        model, rows = self.hf_model_and_rows(padding="max_length")
        args = timing.baseline_arguments(self.params, max_steps, output_dir)
        return Trainer(
            model=model, args=args, train_dataset=rows, data_collator=default_data_collator
        )

    def tuned_trainer(self, max_steps: int, output_dir: Path, bf16: bool) -> Trainer:
        """The same Trainer as a capable user sets it up: dynamic padding, length-grouped
        batches, bertfit's precision."""
        model, rows = self.hf_model_and_rows(padding=False)
        args = dataclasses.replace(
            timing.baseline_arguments(self.params, max_steps, output_dir),
            train_sampling_strategy="group_by_length",
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),  # bf16 autocast on a CPU must be asked for
        )
        collator = DataCollatorWithPadding(load_tokenizer(self.model_name))
        return Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)

    def bertfit_trainer(self, max_steps: int, output_dir: Path, bf16: bool) -> BertfitTrainer:
        """The trainer the finetune stage runs, from its own set-up (prepare_finetune)."""
        params = self.params.model_copy(update={"mixed_precision": "auto" if bf16 else "no"})

        def bounded(args: TrainingArguments) -> TrainingArguments:
            """The stage's arguments bounded to the timed steps (max_steps wins over epochs),
            without the validation and the logging, at the batch every variant trains with
            (the stage lowers it only for a very small train set)."""
            return dataclasses.replace(
                args,
                max_steps=max_steps,
                per_device_train_batch_size=params.per_device_train_batch_size,
                eval_strategy="no",
                do_eval=False,
                logging_strategy="no",
                disable_tqdm=True,
            )

        run = prepare_finetune(
            self.model_name,
            self.task,
            self.train,
            self.validation,
            params,
            self.max_seq_length,
            output_dir / "model",
            output_dir / "reports",
            arguments=bounded,
        )
        return run.trainer

    def mean_tokens(self) -> float:
        """Tokens per train example as the finetune stage encodes them (no padding): what
        tokens/s and model FLOPs count, for every variant alike."""
        family = family_for(self.model_name)
        prep = preprocessing(self.params, self.max_seq_length)
        train = family.encoder(load_tokenizer(self.model_name), prep).labelled(
            self.train, self.task, "train"
        )
        return sum(len(ids) for ids in train["input_ids"]) / len(train)

    def seconds_per_step(self, variant: str, steps: int, warmup: int, scratch: Path) -> float:
        """Wall seconds per training step after `warmup` untimed ones, data loading included."""
        set_seed(0)
        bf16 = variant.endswith("bf16")
        if variant == "hf_baseline":
            trainer = self.baseline_trainer(steps + warmup, scratch / variant)
        elif variant.startswith("hf_tuned"):
            trainer = self.tuned_trainer(steps + warmup, scratch / variant, bf16)
        else:
            trainer = self.bertfit_trainer(steps + warmup, scratch / variant, bf16)
        return timing.time_training(trainer, warmup).wall_per_step()


def write_classifier(
    model_name: str, task: Task, params: FinetuneParams, max_seq_length: int, model_dir: Path
) -> None:
    """A model directory as finetune writes models/finetune; any weights of the right size do."""
    family = family_for(model_name)
    tokenizer = load_tokenizer(model_name)
    tokenizer.model_max_length = max_seq_length  # as the stage sets it for pipeline()
    family.save(family.classifier(model_name, task, None), model_dir)
    tokenizer.save_pretrained(model_dir)
    prep = preprocessing(params, max_seq_length)
    manifest = Manifest(
        family=family.name, head="stock", stage="finetune", preprocessing=prep, task=task
    )
    manifest.save(model_dir)


def eval_seconds(variant: str, model_dir: Path, test: pd.DataFrame, batch_size: int) -> float:
    """Seconds to score the test split, tokenisation included, model loading not."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = variant.endswith("bf16")
    if variant.startswith("hf_pipeline"):
        classify = pipeline("text-classification", model=str(model_dir), device=device)
        texts = test["text"].tolist()
        tuned = {"batch_size": batch_size, "truncation": True} if "tuned" in variant else {}
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            classify(texts, **tuned)
        return time.perf_counter() - start
    trained = load_trained(model_dir)  # what bertfit.evaluation.evaluate does from here on
    trained.model.to(device)
    start = time.perf_counter()
    dataset = trained.encoder().labelled(test, trained.task, "test")
    model_scores(trained, dataset, trained.task, batch_size, bf16)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = timing.parse_args(__doc__, argv, steps=40, report="finetune.json")
    model, params, eval_params = load(args.params, "model", "finetune", "evaluate")
    if head_spec(params) is not None:
        raise SystemExit(
            "finetune_throughput: pipeline('text-classification') loads the stock classifier "
            "only; run it with finetune.feature: cls and a truncation other than hierarchical"
        )
    prepared = timing.prepared_target(args.params)
    task = Task(name=prepared.name, labels=prepared.labels, problem=prepared.problem)
    train, test = prepared.splits["train"], prepared.splits["test"]
    validation = prepared.splits["validation"]
    training = Training(model.name, task, train, validation, params, model.max_seq_length)

    def measure(key: str) -> float:
        """One variant's seconds: `train:<variant>` per step, `evaluate:<variant>` the split."""
        workload, variant = key.split(":")
        variant = timing.process_settings(variant)
        if workload == "train":
            return training.seconds_per_step(variant, args.steps, args.warmup, args.scratch)
        batch_size = eval_params.per_device_eval_batch_size
        return eval_seconds(variant, args.scratch / "classifier", test, batch_size)

    if timing.measured(args, measure):
        return
    batch = params.per_device_train_batch_size * params.gradient_accumulation_steps
    precisions = PRECISIONS if timing.with_bf16(args) else PRECISIONS[:1]
    train_variants = ["hf_baseline"]
    eval_variants = ["hf_pipeline"]
    for p in precisions:
        train_variants += [f"hf_tuned_{p}", f"hf_tuned_{p}{timing.MALLOC}", f"bertfit_{p}"]
        tuned = f"hf_pipeline_tuned_{p}"
        eval_variants += [tuned, f"{tuned}{timing.MALLOC}", f"bertfit_{p}"]
    keys = [f"train:{v}" for v in train_variants] + [f"evaluate:{v}" for v in eval_variants]
    with tempfile.TemporaryDirectory() as work:
        scratch = Path(work)
        write_classifier(model.name, task, params, model.max_seq_length, scratch / "classifier")
        # one round: each training variant, then each evaluation variant
        seconds = timing.alternate(args.rounds, keys, __file__, args, scratch)

    print(
        f"{timing.device_name()}; {model.name}; {task.name}; batch {batch}; "
        f"max_seq_length {model.max_seq_length}"
    )
    train_rows = timing.speed_table(
        "training",
        {v: seconds[f"train:{v}"] for v in train_variants},
        "hf_baseline",
        batch,
        "seconds_per_step",
        "examples_per_s",
    )
    eval_rows = timing.speed_table(
        "evaluation",
        {v: seconds[f"evaluate:{v}"] for v in eval_variants},
        "hf_pipeline",
        len(test),
        "seconds",
        "examples_per_s",
    )
    tokens = training.mean_tokens()
    flops_per_token = timing.encoder_flops_per_token(load_config(model.name), tokens)
    timing.add_utilisation(train_rows, "examples_per_s", tokens, flops_per_token)
    for p in precisions:
        timing.versus_tuned(train_rows, f"bertfit_{p}", f"hf_tuned_{p}", "seconds_per_step")
        timing.versus_tuned(eval_rows, f"bertfit_{p}", f"hf_pipeline_tuned_{p}", "seconds")
    result = {
        "machine": timing.machine(),
        "model": model.name,
        "task": task.name,
        "batch": batch,
        "max_seq_length": model.max_seq_length,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "test_examples": len(test),
        "mean_train_tokens": tokens,
        "model_flops_per_token": flops_per_token,
        "peak_bf16_flops": timing.peak_bf16_flops(),
        "train": train_rows,
        "evaluate": eval_rows,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
