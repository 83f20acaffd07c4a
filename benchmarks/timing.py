"""What the throughput benchmarks share: their flags, the target's data, step timing and tables.

- `parse_args`: the flags every benchmark takes (--params, --steps, --warmup, --rounds, --out).
- `prepared_target`: the target task's splits straight from the catalogue, as collect prepares
  them (same seed and empty-text check), without a collect run.
- `baseline_arguments`: the Hugging Face baseline's TrainingArguments (the Trainer's defaults).
- `StepClock`, `time_training`: a TrainerCallback timing the optimisation steps after the first
  `warmup`, and a training run under it.
- `alternate`: median seconds of each variant, the variants taking turns in every round so
  machine noise hits them alike, each run in a Python process of its own (`measured` is the
  child's side; `process_settings` gives a `_malloc` variant bertfit's malloc settings).
- `device_name`, `machine`, `speed_table`: the machine (with the CPU's model and the flags that
  decide its speed), and one printed table of the variants' speeds, returned as the rows the
  JSON report holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from bertfit.data.sources import load_task
from bertfit.data.splits import PreparedTask, prepare_task
from bertfit.hardware import bf16_available, keep_freed_memory
from bertfit.params import (
    TrainingParams,
    parse_section,
    parse_target,
    parse_tasks,
    read_params_file,
)
from bertfit.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
# a Hugging Face variant run in a process with bertfit's malloc settings
MALLOC = "_malloc"


def parse_args(doc: str, argv: list[str] | None, steps: int, report: str) -> argparse.Namespace:
    """The benchmark's flags; --out defaults to reports/benchmarks/`report`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--steps", type=int, default=steps, help="timed training steps per variant and round"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks" / report)
    parser.add_argument(
        "--fp32-only",
        action="store_true",
        help="skip the bf16 variants (e.g. with ATEN_CPU_CAPABILITY=avx2, a CPU without bf16)",
    )
    # how `alternate` runs one variant in a process of its own
    parser.add_argument("--measure", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1, --warmup at least 0")
    logging.basicConfig(level=logging.WARNING)
    return args


def prepared_target(params_file: Path) -> PreparedTask:
    """The target's train / validation / test rows, split as collect splits them."""
    data = read_params_file(params_file)
    collect = parse_section(data, "collect", str(params_file))
    tasks = parse_tasks(data, str(params_file))
    target = parse_target(data, tasks, str(params_file))
    spec = tasks[target]
    return prepare_task(
        load_task(target, spec, ROOT),
        spec.split,
        collect.seed,
        collect.max_empty_ratio,
        spec.problem,
        collect.max_missing_label_ratio,
    )


def baseline_arguments(
    params: TrainingParams, max_steps: int, output_dir: Path
) -> TrainingArguments:
    """The Hugging Face side: the Trainer's defaults at the stage's learning rate and batch.

    A plain TrainingArguments on purpose, not training.trainer's: the baseline is what a user runs
    instead of bertfit (run_classification / run_mlm with their defaults), the thing bertfit is
    compared with, so this is the one copy of TrainingArguments outside training.trainer.
    """
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )


class StepClock(TrainerCallback):
    """Times the optimisation steps after the first `warmup` ones.

    `wall_per_step`: wall time from the end of step `warmup` to the end of the last, per step,
    the batches' loading and collation included. `median_step`: the median of each step's own
    time (forward, backward, optimiser); the Trainer fetches a step's batches before
    on_step_begin, so loading is left out.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ends: list[float] = []  # training start, then the end of every step
        self.steps: list[float] = []  # each timed step, begin to end
        self._begin = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self._begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        now = time.perf_counter()
        self.ends.append(now)
        if state.global_step > self.warmup:
            self.steps.append(now - self._begin)

    def wall_per_step(self) -> float:
        return (self.ends[-1] - self.ends[self.warmup]) / len(self.steps)

    def median_step(self) -> float:
        return statistics.median(self.steps)


def synchronize() -> None:
    """Wait for the GPU's queued work, so a host clock read after it times the step (CUDA runs
    asynchronously: without it a step's clock stops when its kernels are launched, not done)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_training(trainer: Trainer, warmup: int) -> StepClock:
    """Train under a StepClock that skips the first `warmup` steps; the clock, with its times."""
    clock = StepClock(warmup)
    trainer.add_callback(clock)
    trainer.train()
    return clock


def alternate(
    rounds: int, variants: list[str], script: str, args: argparse.Namespace, scratch: Path
) -> dict[str, float]:
    """Median seconds of each variant over `rounds`, every round running them all in turn.

    Each run is a new Python process (`script` with --measure VARIANT, writing its seconds to
    a JSON file): bertfit changes process-wide settings (hardware.keep_freed_memory),
    and the heap one run leaves behind changes the next one's speed, so no variant may run in
    the process of another. `scratch`: a folder the runs share (the parent's files for them).
    """
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    result = scratch / "result.json"
    for _ in range(rounds):
        for variant in variants:
            command = [sys.executable, script, "--params", str(args.params)]
            command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            command += ["--scratch", str(scratch), "--measure", variant, "--result", str(result)]
            subprocess.run(command, check=True)
            seconds[variant].append(json.loads(result.read_text())["seconds"])
            result.unlink()
    return {v: statistics.median(s) for v, s in seconds.items()}


def measured(args: argparse.Namespace, measure: Callable[[str], float]) -> bool:
    """In a process `alternate` started (--measure given): time the one variant, write its
    seconds where it asked, and say so (True); else False."""
    if args.measure is None:
        return False
    write_json(args.result, {"seconds": measure(args.measure)})
    return True


def process_settings(variant: str) -> str:
    """A `_malloc` variant: bertfit's malloc settings in this process, and the variant it times
    (the name without the suffix); any other variant unchanged."""
    if variant.endswith(MALLOC):
        keep_freed_memory()
        return variant.removesuffix(MALLOC)
    return variant


# dense bf16 matrix rate of the GPU's datasheet (no sparsity), the denominator of model FLOPs
# utilisation; H100 and H200 SXM share the chip's arithmetic. None: MFU is not reported.
PEAK_BF16_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def peak_bf16_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for chip, peak in PEAK_BF16_FLOPS.items() if chip in name), None)


def encoder_flops_per_token(config, seq_len: float) -> float:
    """Training FLOPs per token of a BERT-style encoder (forward and backward), PaLM's count:
    6 x the parameters outside the embeddings + 12 x layers x hidden x sequence length for the
    attention scores. The task or MLM head is left out: it is the part bertfit and the
    baselines compute differently (masked positions only vs the whole vocabulary), so one
    count serves every variant and MFU ratios equal speed ratios."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * hidden * hidden + 2 * hidden * config.intermediate_size  # q, k, v, o, FFN
    return 6 * layers * per_layer + 12 * layers * hidden * seq_len


def add_utilisation(
    rows: dict[str, dict[str, float]],
    rate_key: str,
    tokens_per_item: float,
    flops_per_token: float,
) -> None:
    """Add tokens/s, model TFLOP/s and, on a GPU with a known peak, model FLOPs utilisation of
    the bf16 rows: `rate_key` (items/s) x tokens per item x FLOPs per token over the peak."""
    peak = peak_bf16_flops()
    for variant, row in rows.items():
        row["tokens_per_s"] = row[rate_key] * tokens_per_item
        row["model_tflops_per_s"] = row["tokens_per_s"] * flops_per_token / 1e12
        if peak is not None and variant.endswith("bf16"):
            row["mfu"] = row["tokens_per_s"] * flops_per_token / peak
            print(f"{variant}: {row['model_tflops_per_s']:.1f} TFLOP/s, MFU {row['mfu']:.1%}")


def with_bf16(args: argparse.Namespace) -> bool:
    """Whether the bf16 variants run: the machine has bf16 arithmetic and --fp32-only is off."""
    return bf16_available() and not args.fp32_only


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu x{torch.get_num_threads()} threads"


# the CPU flags that decide which kernels run: AVX2 only (fp32), AVX-512, bf16 arithmetic
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict[str, object]:
    """The device, the CPU's model name, its speed-deciding flags and the kernels torch uses,
    and whether bf16 pays."""
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {
        "device": device_name(),
        "cpu": model,
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        # the instruction set torch's own kernels use: lower than the flags allow where
        # ATEN_CPU_CAPABILITY says so (with ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS for
        # the matrix products: an AVX2-only CPU's kernels on this one)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16": bf16_available(),
    }


def speed_table(
    title: str,
    seconds: dict[str, float],
    baseline: str,
    amount: float,
    seconds_key: str,
    rate_key: str,
) -> dict[str, dict[str, float]]:
    """Print a row per variant (seconds, `amount` per second, speed-up over `baseline`).

    Returns the rows as {variant: {seconds_key, rate_key, "speedup"}}; `rate_key` names the
    amount, e.g. examples_per_s for `amount` examples in `seconds`.
    """
    unit = "s/step" if seconds_key == "seconds_per_step" else "seconds"
    rate = rate_key.removesuffix("_per_s") + "/s"
    print(f"{title:<28} {unit:>8} {rate:>11} {'vs ' + baseline:>15}")
    rows = {}
    for variant, s in seconds.items():
        row = {seconds_key: s, rate_key: amount / s, "speedup": seconds[baseline] / s}
        print(f"{variant:<28} {s:8.3f} {row[rate_key]:11.1f} {row['speedup']:14.2f}x")
        rows[variant] = row
    return rows


def versus_tuned(
    rows: dict[str, dict[str, float]], variant: str, tuned: str, seconds_key: str
) -> None:
    """Add `speedup_vs_tuned` to `variant`'s row: the tuned baseline's seconds over its own;
    and `speedup_vs_tuned_malloc` over the tuned baseline under bertfit's malloc settings,
    where that was run."""
    for suffix in ("", MALLOC):
        if tuned + suffix in rows:
            ratio = rows[tuned + suffix][seconds_key] / rows[variant][seconds_key]
            rows[variant][f"speedup_vs_tuned{suffix}"] = ratio
            print(f"{variant} vs {tuned + suffix}: {ratio:.2f}x")
