"""Pretrain training-step throughput: bertfit versus the plain Hugging Face recipe, in one run.

Baseline (as run_mlm does): AutoModelForMaskedLM + DataCollatorForLanguageModeling + Trainer,
full-vocabulary logits, fp32. bertfit: the same model, data, batch, sequence length and Trainer,
with logits and loss at the masked positions only, and bf16 autocast where the CPU or GPU has
bf16 arithmetic (bertfit's default there). The variants alternate in rounds so machine noise hits
them alike; tokens/s counts every token of the packed blocks.

    python benchmarks/pretrain_throughput.py --steps 30 --rounds 2

Prints a table and writes it as JSON to --out (default reports/benchmarks/pretrain.json).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForMaskedLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from bertfit.data.corpus import build_corpus
from bertfit.data.sources import load_task
from bertfit.data.splits import prepare_task
from bertfit.models.loading import LOAD_KWARGS, load_tokenizer, resolve_model_name
from bertfit.params import PretrainParams, parse_tasks, read_params_file
from bertfit.reporting import write_json
from bertfit.training.hardware import bf16_available
from bertfit.training.mlm import use_masked_positions
from bertfit.training.pretrain import MLMCollator, tokenize_corpus

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(TrainerCallback):
    """Wall time of each optimisation step after the first `warmup` ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._start = warmup, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._start)


def run(
    variant: str,
    model_name: str,
    dataset,
    collator,
    batch: int,
    steps: int,
    warmup: int,
    out_dir: Path,
) -> float:
    """Seconds per step (median) of one variant."""
    set_seed(0)
    model = AutoModelForMaskedLM.from_pretrained(resolve_model_name(model_name), **LOAD_KWARGS)
    ours = variant != "hf_baseline"
    if ours:
        use_masked_positions(model)
    timer = StepTimer(warmup)
    bf16 = ours and variant.endswith("bf16")
    args = TrainingArguments(
        output_dir=str(out_dir / variant),
        max_steps=steps + warmup,
        learning_rate=5e-5,
        per_device_train_batch_size=batch,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        bf16=bf16,
        seed=0,
        use_cpu=not torch.cuda.is_available(),  # CPU autocast needs it said
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
    )
    Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer]
    ).train()
    return statistics.median(timer.times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/pretrain.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    data = read_params_file(args.params)
    params = PretrainParams(**data["pretrain"])
    model_name, target = data["model"]["name"], data["target"]
    spec = parse_tasks(data)[target]
    task = prepare_task(load_task(target, spec, ROOT), spec.split, 0, 0.01)
    train_texts, _, _ = build_corpus([target], {target: task}, 0.05, 0)
    tokenizer = load_tokenizer(model_name)
    dataset = tokenize_corpus(train_texts["text"].tolist(), tokenizer, params, "benchmark")
    collator = MLMCollator(tokenizer, mlm_probability=params.mlm_probability)
    batch, block = params.per_device_train_batch_size, params.max_seq_length

    variants = ["hf_baseline", "bertfit_fp32"] + (["bertfit_bf16"] if bf16_available() else [])
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as scratch:  # the Trainers' output_dir; nothing is saved
        for _ in range(args.rounds):
            for v in variants:
                seconds[v].append(
                    run(
                        v,
                        model_name,
                        dataset,
                        collator,
                        batch,
                        args.steps,
                        args.warmup,
                        Path(scratch),
                    )
                )
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else (f"cpu x{torch.get_num_threads()} threads")
    )
    base = statistics.median(seconds["hf_baseline"])
    result = {
        "device": device,
        "model": model_name,
        "batch": batch,
        "block": block,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "variants": {},
    }
    print(
        f"{device}; {model_name}; batch {batch} x {block} tokens; "
        f"{args.steps} timed steps x {args.rounds} rounds"
    )
    print(f"{'variant':<14} {'s/step':>8} {'tokens/s':>10} {'vs baseline':>12}")
    for v in variants:
        s = statistics.median(seconds[v])
        row = {"seconds_per_step": s, "tokens_per_s": batch * block / s, "speedup": base / s}
        result["variants"][v] = row
        print(f"{v:<14} {s:8.3f} {row['tokens_per_s']:10.0f} {row['speedup']:11.2f}x")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
