"""How much arithmetic a training step does, per variant of the throughput benchmarks: the
ceiling of a speed ratio that comes from doing less work.

Counts the FLOPs of forward and backward (torch.utils.flop_counter.FlopCounterMode: matrix
products and attention, what dominates a step) on the same batches for:
- finetune: the tuned Hugging Face Trainer (hf_tuned_fp32 of finetune_throughput.py) and bertfit's
  finetune path (bertfit_fp32), the first `--steps` batches of each one's length-grouped sampler
  under one seed, with their real and padded tokens;
- pretrain: run_mlm's defaults (hf_baseline of pretrain_throughput.py: full-vocabulary logits)
  and bertfit's pretrain path (bertfit_fp32: logits and the last layer at the masked positions).

`work_ratio` is the baseline's FLOPs over bertfit's: the speed-up bertfit would show if both ran
their arithmetic equally fast; a measured ratio above it means bertfit's steps also run faster
per FLOP (e.g. fewer fresh pages: training.hardware.keep_freed_memory), one below it that
bertfit loses time elsewhere. The optimiser step is not counted (the same AdamW over the same
parameters in every variant).

    python benchmarks/step_flops.py --steps 20

Prints a line per variant and writes reports/benchmarks/step_flops.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import pretrain_throughput
import timing
import torch
from finetune_throughput import Training
from torch.utils.flop_counter import FlopCounterMode
from transformers import Trainer

from bertfit.data.tasks import Task
from bertfit.params import load
from bertfit.reporting import write_json


def step_flops(trainer: Trainer, steps: int) -> dict[str, float]:
    """Mean FLOPs, real tokens and padded tokens of the first `steps` training batches."""
    torch.manual_seed(0)
    loader = trainer.get_train_dataloader()
    batches = [batch for _, batch in zip(range(steps), loader, strict=False)]
    model = trainer.model
    model.train()
    flops = 0
    for batch in batches:
        with FlopCounterMode(display=False) as counter:
            model(**batch).loss.backward()
        flops += counter.get_total_flops()
        model.zero_grad()
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    n = len(batches)
    return {"gflops_per_step": flops / n / 1e9, "tokens": real / n, "padded_tokens": padded / n}


def with_ratio(rows: dict[str, dict[str, float]], baseline: str) -> dict[str, Any]:
    for variant, row in rows.items():
        print(
            f"{variant:<14} {row['gflops_per_step']:8.1f} GFLOP/step, "
            f"{row['tokens']:.0f} tokens ({row['padded_tokens']:.0f} with padding)"
        )
    ratio = rows[baseline]["gflops_per_step"] / rows["bertfit_fp32"]["gflops_per_step"]
    print(f"work ratio {baseline} / bertfit_fp32: {ratio:.3f}")
    return {"variants": rows, "work_ratio": ratio}


def finetune_flops(params_file: Path, steps: int, scratch: Path) -> dict[str, Any]:
    model, params = load(params_file, "model", "finetune")
    prepared = timing.prepared_target(params_file)
    task = Task(name=prepared.name, labels=prepared.labels, problem=prepared.problem)
    training = Training(model.name, task, prepared.splits["train"], params, model.max_seq_length)
    rows = {
        "hf_tuned_fp32": step_flops(training.tuned_trainer(1, scratch / "hf", False), steps),
        "bertfit_fp32": step_flops(training.bertfit_trainer(1, scratch / "bertfit", False), steps),
    }
    return with_ratio(rows, "hf_tuned_fp32")


def pretrain_flops(params_file: Path, steps: int, scratch: Path) -> dict[str, Any]:
    training = pretrain_throughput.benchmark_training(params_file)
    rows = {
        "hf_baseline": step_flops(training.baseline_trainer(1, scratch / "hf"), steps),
        "bertfit_fp32": step_flops(training.bertfit_trainer(1, scratch / "bertfit", False), steps),
    }
    return with_ratio(rows, "hf_baseline")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=timing.ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=20, help="batches counted per variant")
    parser.add_argument(
        "--out", type=Path, default=timing.ROOT / "reports/benchmarks/step_flops.json"
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    with tempfile.TemporaryDirectory() as work:  # the Trainers' output_dir; nothing is saved
        scratch = Path(work)
        print("finetune training step")
        finetune = finetune_flops(args.params, args.steps, scratch)
        print("pretrain (MLM) training step")
        pretrain = pretrain_flops(args.params, args.steps, scratch)
    write_json(
        args.out,
        {"steps": args.steps, "finetune": finetune, "pretrain": pretrain},
    )


if __name__ == "__main__":
    main()
