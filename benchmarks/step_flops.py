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
per FLOP (e.g. fewer fresh pages: hardware.keep_freed_memory), one below it that
bertfit loses time elsewhere. The optimiser step is not counted (the same AdamW over the same
parameters in every variant).

How fast each variant runs its arithmetic: the same batches' forward and backward are then
timed (after `--warmup` untimed passes, nothing counting), giving GFLOP/s, set against the
machine's fp32 matrix-product rate measured in the same run (torch.mm at the step's shape:
its tokens × hidden × intermediate size). `of_matmul_rate` near 1 would mean a step is all
matrix products at full speed; what is left is the element-wise work (dropout, GELU, softmax,
LayerNorm, the embedding gradient), which this count does not include. Every variant runs with
bertfit's malloc settings (applied once at the start: the `_malloc` rows of the throughput
benchmarks), so fresh pages do not tell them apart; fp32 only, in one process.

    python benchmarks/step_flops.py --steps 20

Prints a line per variant and writes reports/benchmarks/step_flops.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import pretrain_throughput
import timing
import torch
from finetune_throughput import Training
from torch.utils.flop_counter import FlopCounterMode
from transformers import Trainer

from bertfit.data.tasks import Task
from bertfit.hardware import keep_freed_memory
from bertfit.params import load
from bertfit.reporting import write_json


def forward_backward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    model(**batch).loss.backward()
    model.zero_grad()


def step_flops(trainer: Trainer, steps: int, warmup: int) -> dict[str, float]:
    """Mean FLOPs, real and padded tokens, and seconds of forward and backward of the first
    `steps` training batches (timed after `warmup` untimed passes over them)."""
    torch.manual_seed(0)
    loader = trainer.get_train_dataloader()
    batches = [batch for _, batch in zip(range(steps), loader, strict=False)]
    model = trainer.model
    model.train()
    flops = 0
    for batch in batches:
        with FlopCounterMode(display=False) as counter:
            forward_backward(model, batch)
        flops += counter.get_total_flops()
    for batch in batches[:warmup]:
        forward_backward(model, batch)
    start = time.perf_counter()
    for batch in batches:
        forward_backward(model, batch)
    n = len(batches)
    seconds = (time.perf_counter() - start) / n
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    return {
        "gflops_per_step": flops / n / 1e9,
        "tokens": real / n,
        "padded_tokens": padded / n,
        "seconds_per_step": seconds,
        "gflops_per_s": flops / n / seconds / 1e9,
    }


def matmul_rate(rows: int, inner: int, cols: int, repeats: int = 20) -> float:
    """fp32 GFLOP/s of torch.mm at [rows, inner] x [inner, cols] (the step's feed-forward
    product), after two untimed products."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * inner * cols * repeats / (time.perf_counter() - start) / 1e9


def with_ratio(
    rows: dict[str, dict[str, float]], baseline: str, trainer: Trainer
) -> dict[str, Any]:
    config = trainer.model.config
    tokens = round(rows["bertfit_fp32"]["padded_tokens"])
    rate = matmul_rate(tokens, config.hidden_size, config.intermediate_size)
    print(
        f"fp32 matrix products [{tokens}, {config.hidden_size}] x "
        f"[{config.hidden_size}, {config.intermediate_size}]: {rate:.1f} GFLOP/s"
    )
    for variant, row in rows.items():
        row["of_matmul_rate"] = row["gflops_per_s"] / rate
        print(
            f"{variant:<14} {row['gflops_per_step']:8.1f} GFLOP/step, "
            f"{row['tokens']:.0f} tokens ({row['padded_tokens']:.0f} with padding), "
            f"{row['seconds_per_step']:.3f} s forward+backward, {row['gflops_per_s']:.1f} GFLOP/s "
            f"({row['of_matmul_rate']:.0%} of the matrix-product rate)"
        )
    work = rows[baseline]["gflops_per_step"] / rows["bertfit_fp32"]["gflops_per_step"]
    speed = rows[baseline]["seconds_per_step"] / rows["bertfit_fp32"]["seconds_per_step"]
    print(f"work ratio {baseline} / bertfit_fp32: {work:.3f}; time ratio {speed:.3f}")
    return {
        "variants": rows,
        "work_ratio": work,
        "time_ratio": speed,
        "matmul_gflops_per_s": rate,
        "matmul_shape": [tokens, config.hidden_size, config.intermediate_size],
    }


def finetune_flops(params_file: Path, steps: int, warmup: int, scratch: Path) -> dict[str, Any]:
    model, params = load(params_file, "model", "finetune")
    prepared = timing.prepared_target(params_file)
    task = Task(name=prepared.name, labels=prepared.labels, problem=prepared.problem)
    training = Training(model.name, task, prepared.splits["train"], params, model.max_seq_length)
    bertfit = training.bertfit_trainer(1, scratch / "bertfit", False)
    rows = {
        "hf_tuned_fp32": step_flops(
            training.tuned_trainer(1, scratch / "hf", False), steps, warmup
        ),
        "bertfit_fp32": step_flops(bertfit, steps, warmup),
    }
    return with_ratio(rows, "hf_tuned_fp32", bertfit)


def pretrain_flops(params_file: Path, steps: int, warmup: int, scratch: Path) -> dict[str, Any]:
    training = pretrain_throughput.benchmark_training(params_file)
    bertfit = training.bertfit_trainer(1, scratch / "bertfit", False)
    rows = {
        "hf_baseline": step_flops(training.baseline_trainer(1, scratch / "hf"), steps, warmup),
        "bertfit_fp32": step_flops(bertfit, steps, warmup),
    }
    return with_ratio(rows, "hf_baseline", bertfit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=timing.ROOT / "params.yaml")
    parser.add_argument("--steps", type=int, default=20, help="batches counted per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes before timing")
    parser.add_argument(
        "--out", type=Path, default=timing.ROOT / "reports/benchmarks/step_flops.json"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    keep_freed_memory()  # for every variant alike (bertfit's trainer would set it mid-run)
    with tempfile.TemporaryDirectory() as work:  # the Trainers' output_dir; nothing is saved
        scratch = Path(work)
        print("finetune training step")
        finetune = finetune_flops(args.params, args.steps, args.warmup, scratch)
        print("pretrain (MLM) training step")
        pretrain = pretrain_flops(args.params, args.steps, args.warmup, scratch)
    write_json(
        args.out,
        {
            "steps": args.steps,
            "warmup": args.warmup,
            "machine": timing.machine(),
            "finetune": finetune,
            "pretrain": pretrain,
        },
    )


if __name__ == "__main__":
    main()
