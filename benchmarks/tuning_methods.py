"""Full fine-tuning against prompt tuning and LoRA on the target, several seeds, one run.

FiT on the collected target (data/tasks/<target>, from `dvc repro` or the collect stage), from
the base model: each method is a finetune with params.yaml's finetune section plus the method's
own settings, then the test split is scored as the evaluate stage does. Reported per method:
test error (mean ± std over the seeds), trainable parameters and their share, optimiser-state
bytes, and seconds per epoch. Prompt tuning follows Lester et al. (Adafactor, learning rate 0.3,
no parameter scaling, layer_decay 1.0); LoRA trains at --lora-lr with AdamW.

    .venv/bin/python benchmarks/tuning_methods.py --seeds 42 43 44

Writes reports/benchmarks/tuning_methods.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertfit.data.tasks import read_task  # noqa: E402
from bertfit.evaluation import evaluate  # noqa: E402
from bertfit.params import FinetuneParams, parse_section, read_params_file  # noqa: E402
from bertfit.training.finetune import finetune  # noqa: E402


def methods(lora_lr: float) -> dict[str, dict[str, Any]]:
    prompt = {
        "method": "prompt_tuning",
        "optimizer": "adafactor",
        "learning_rate": 0.3,
        "layer_decay": 1.0,
        "weight_decay": 1e-5,
    }
    return {
        "full": {"method": "full"},
        "prompt_tuning_20": prompt | {"num_virtual_tokens": 20},
        "prompt_tuning_100": prompt | {"num_virtual_tokens": 100},
        "lora": {"method": "lora", "learning_rate": lora_lr, "layer_decay": 1.0},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--methods", nargs="+", default=None, help="default: all four")
    parser.add_argument("--lora-lr", type=float, default=5e-4)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/tuning_methods.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    data = read_params_file(args.params)
    model = parse_section(data, "model", str(args.params))
    base = data["finetune"]
    evaluate_params = parse_section(data, "evaluate", str(args.params))
    task = read_task(args.data_dir / "tasks" / data["target"])
    train, validation = task.split("train"), task.split("validation")
    chosen = methods(args.lora_lr)
    names = args.methods or list(chosen)
    rows = []
    for name in names:
        runs = []
        for seed in args.seeds:
            fit = {"seed": seed, "init_head_from_multitask": False}  # FiT: from the base
            params = FinetuneParams(**(base | chosen[name] | fit))
            with tempfile.TemporaryDirectory() as work:
                out = Path(work)
                metrics = finetune(
                    model.name, task, train, validation, params, model.max_seq_length,
                    out / "model", out / "reports",
                )  # fmt: skip
                test, _ = evaluate(out / "model", task, evaluate_params, out / "evaluate")
            runs.append(metrics | {"test_error": test["error_rate"]})
            print(f"{name} seed {seed}: test error {test['error_rate']:.4f}", flush=True)
        errors = [r["test_error"] for r in runs]
        rows.append(
            {
                "method": name,
                "seeds": args.seeds,
                "test_error_mean": statistics.mean(errors),
                "test_error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "test_errors": errors,
                "trainable_parameters": runs[0]["trainable_parameters"],
                "trainable_share": runs[0]["trainable_share"],
                "optimizer_state_bytes": runs[0]["optimizer_state_bytes"],
                "seconds_per_epoch": statistics.mean(
                    r["train_runtime_s"] / params.num_train_epochs for r in runs
                ),
            }
        )
    header = ("method", "test error", "trainable", "share", "opt. state", "s/epoch")
    print("{:18} {:>16} {:>12} {:>8} {:>13} {:>8}".format(*header))
    for r in rows:
        print(
            f"{r['method']:18} {r['test_error_mean']:.4f} ± {r['test_error_std']:.4f} "
            f"{r['trainable_parameters']:12,d} {r['trainable_share']:8.4%} "
            f"{r['optimizer_state_bytes'] / 2**20:10.1f} MB {r['seconds_per_epoch']:8.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"model": model.name, "task": task.name, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
