"""Fine-tuning and evaluation throughput: bertfit versus the Hugging Face defaults, in one run.

Training, same model, data (the target's train split), batch and machine, examples/s:
- hf_baseline: what run_classification does by default: every text padded to max_seq_length
  (`pad_to_max_length`), random batches, fp32, the Trainer's AdamW.
- bertfit: the finetune stage's own TrainingArguments and Trainer: head+tail truncation, dynamic
  padding, length-grouped batches, layer-wise decay, bf16 autocast where the CPU or GPU has it.

Evaluation, the target's test split, examples/s including tokenisation:
- hf_pipeline: `transformers.pipeline("text-classification")` with its defaults, called on the
  list of texts.
- bertfit: the evaluate stage's path: tokenise once, length-sorted batches under inference_mode,
  bf16 autocast where the CPU or GPU has it (evaluate.mixed_precision: auto).

Variants alternate in rounds so machine noise hits them alike.

    python benchmarks/finetune_throughput.py --steps 40 --rounds 2

Prints a table and writes it as JSON to --out (default reports/benchmarks/finetune.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    pipeline,
    set_seed,
)

from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.sources import load_task
from bertfit.data.splits import prepare_task
from bertfit.inference import predict_logits
from bertfit.models.loading import load_classifier, load_tokenizer
from bertfit.params import EvaluateParams, FinetuneParams, parse_tasks, read_params_file
from bertfit.reporting import write_json
from bertfit.training.finetune import LayerwiseDecayTrainer
from bertfit.training.finetune import training_arguments as bertfit_arguments
from bertfit.training.hardware import bf16_available

ROOT = Path(__file__).resolve().parents[1]


class Clock(TrainerCallback):
    """Wall time from the end of step `warmup` to the end of the last (data loading included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def train_seconds_per_step(
    variant: str,
    model_name: str,
    labels: list[str],
    train: pd.DataFrame,
    params: FinetuneParams,
    max_seq_length: int,
    steps: int,
    warmup: int,
    scratch: Path,
) -> float:
    set_seed(0)
    tokenizer = load_tokenizer(model_name)
    model = load_classifier(model_name, labels)
    label2id = model.config.label2id
    clock = Clock(warmup)
    if variant == "hf_baseline":
        encoded = tokenizer(
            train["text"].tolist(), padding="max_length", max_length=max_seq_length, truncation=True
        )
        rows = [
            {k: encoded[k][i] for k in encoded} | {"labels": label2id[label]}
            for i, label in enumerate(train["label"])
        ]
        args = TrainingArguments(
            output_dir=str(scratch / variant),
            max_steps=steps + warmup,
            learning_rate=params.learning_rate,
            per_device_train_batch_size=params.per_device_train_batch_size,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=default_data_collator,
            callbacks=[clock],
        )
    else:
        encoder = Encoder(
            tokenizer, Preprocessing(max_seq_length, params.truncation, params.head_tokens)
        )
        # finetune's own arguments, bounded to the timed steps, without evaluation or saving
        args = dataclasses.replace(
            bertfit_arguments(params, scratch / variant),
            max_steps=steps + warmup,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="no",
            disable_tqdm=True,
        )
        trainer = LayerwiseDecayTrainer(
            model=model,
            args=args,
            train_dataset=encoder.dataset(train, label2id),
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            layer_decay=params.layer_decay,
            callbacks=[clock],
        )
    trainer.train()
    return (clock.end - clock.start) / steps


def eval_seconds(
    variant: str,
    model_dir: Path,
    texts: list[str],
    params: FinetuneParams,
    max_seq_length: int,
    batch_size: int,
    bf16: bool,
) -> float:
    tokenizer = load_tokenizer(str(model_dir))
    if variant == "hf_pipeline":
        classify = pipeline("text-classification", model=str(model_dir), device="cpu")
        start = time.perf_counter()
        classify(texts)
        return time.perf_counter() - start
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    start = time.perf_counter()
    prep = Preprocessing(max_seq_length, params.truncation, params.head_tokens)
    dataset = Encoder(tokenizer, prep).dataset(pd.DataFrame({"text": texts}))
    predict_logits(model, tokenizer, dataset, batch_size, bf16=bf16)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/finetune.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    data = read_params_file(args.params)
    params = FinetuneParams(**data["finetune"])
    eval_params = EvaluateParams(**data["evaluate"])
    eval_bf16 = eval_params.mixed_precision == "auto" and bf16_available()
    model_name, target = data["model"]["name"], data["target"]
    max_seq_length = data["model"]["max_seq_length"]
    spec = parse_tasks(data)[target]
    task = prepare_task(load_task(target, spec, ROOT), spec.split, 0, 0.01)
    train, test = task.splits["train"], task.splits["test"]["text"].tolist()
    batch = params.per_device_train_batch_size

    train_variants, eval_variants = ["hf_baseline", "bertfit"], ["hf_pipeline", "bertfit"]
    train_s: dict[str, list[float]] = {v: [] for v in train_variants}
    eval_s: dict[str, list[float]] = {v: [] for v in eval_variants}
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "classifier"  # any classifier of the right size will do
        load_classifier(model_name, task.labels).save_pretrained(model_dir)
        load_tokenizer(model_name).save_pretrained(model_dir)
        for _ in range(args.rounds):
            for v in train_variants:
                train_s[v].append(
                    train_seconds_per_step(
                        v,
                        model_name,
                        task.labels,
                        train,
                        params,
                        max_seq_length,
                        args.steps,
                        args.warmup,
                        Path(scratch),
                    )
                )
            for v in eval_variants:
                eval_s[v].append(
                    eval_seconds(
                        v,
                        model_dir,
                        test,
                        params,
                        max_seq_length,
                        eval_params.per_device_eval_batch_size,
                        eval_bf16,
                    )
                )

    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu x{torch.get_num_threads()} threads"
    )
    result: dict = {
        "device": device,
        "model": model_name,
        "task": target,
        "batch": batch,
        "max_seq_length": max_seq_length,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "test_examples": len(test),
        "eval_bf16": eval_bf16,
        "train": {},
        "evaluate": {},
    }
    print(f"{device}; {model_name}; {target}; batch {batch}; max_seq_length {max_seq_length}")
    print(f"{'training':<14} {'s/step':>8} {'examples/s':>11} {'vs baseline':>12}")
    base = statistics.median(train_s["hf_baseline"])
    for v in train_variants:
        s = statistics.median(train_s[v])
        row = {"seconds_per_step": s, "examples_per_s": batch / s, "speedup": base / s}
        result["train"][v] = row
        print(f"{v:<14} {s:8.3f} {row['examples_per_s']:11.1f} {row['speedup']:11.2f}x")
    print(f"{'evaluation':<14} {'seconds':>8} {'examples/s':>11} {'vs pipeline':>12}")
    base = statistics.median(eval_s["hf_pipeline"])
    for v in eval_variants:
        s = statistics.median(eval_s[v])
        row = {"seconds": s, "examples_per_s": len(test) / s, "speedup": base / s}
        result["evaluate"][v] = row
        print(f"{v:<14} {s:8.2f} {row['examples_per_s']:11.1f} {row['speedup']:11.2f}x")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
