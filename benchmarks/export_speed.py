"""Scoring speed and agreement of bertfit export's ONNX models against the PyTorch model.

One run, one machine, the same threads for every variant (--threads, 2 by default: the
embedded default's machine): the model directory (default models/finetune) exported by
`bertfit export` to ONNX fp32 and int8 in a scratch folder, then each of
- torch_fp32: the PyTorch model as bertfit predict loads it (models.family.load_trained);
- onnx_fp32, onnx_int8: the exports as bertfit predict loads them (models.onnx.load_export);
scores the model's task's test split (data/tasks/<task>/test.parquet, written by collect)
through predict's own path (evaluation.model_scores: the manifest's encoding, length-sorted
batches, the family's collator and score), in examples/s including collation:
- batch 1: the first --batch1-examples texts one at a time (a request at a time), through
  predict's path and through the forward pass alone (batches collated before timing);
- batch 64: every test text (or the first --limit) in batches of 64.
Each variant's accuracy on the labels and its agreement with torch_fp32's predictions come from
the batch-64 scores. The first --warmup texts are scored once, untimed, before each timing.

    python benchmarks/export_speed.py [--threads 2] [--batch1-examples 300] [--limit N]

Prints a table and writes it as JSON to --out (default reports/benchmarks/export_speed.json).
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertfit.export import export_model
from bertfit.inference import NOT_INPUTS, model_scores
from bertfit.models.family import Trained, load_trained
from bertfit.models.onnx import load_export
from bertfit.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("torch_fp32", "onnx_fp32", "onnx_int8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models/finetune")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch's and ONNX Runtime's")
    parser.add_argument("--batch1-examples", type=int, default=300)
    parser.add_argument("--limit", type=int, default=None, help="test texts (default: all)")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/export_speed.json")
    args = parser.parse_args(argv)
    if min(args.threads, args.batch1_examples, args.limit or 1) < 1 or args.warmup < 0:
        parser.error("--threads, --batch1-examples and --limit must be at least 1")
    return args


def rate(trained: Trained, texts: pd.DataFrame, batch_size: int, warmup: int) -> tuple:
    """Examples/s of scoring `texts` at `batch_size` (after `warmup` texts untimed), and the
    scores."""
    dataset = trained.encoder().inputs(texts[["text"]], trained.task)
    if warmup:
        model_scores(trained, dataset.select(range(warmup)), trained.task, batch_size, False, True)
    start = time.perf_counter()
    scores = model_scores(trained, dataset, trained.task, batch_size, False, True)
    return len(texts) / (time.perf_counter() - start), scores


def single_batches(trained: Trained, texts: pd.DataFrame) -> list[dict[str, torch.Tensor]]:
    """Each text encoded and collated alone, as predict's batch-1 path does, before timing."""
    dataset = trained.encoder().inputs(texts[["text"]], trained.task)
    rows = dataset.select_columns([c for c in dataset.column_names if c not in NOT_INPUTS])
    collate = trained.collator()
    return [collate([row]) for row in rows.to_list()]


def forward_rate(trained: Trained, texts: pd.DataFrame, warmup: int) -> float:
    """Examples/s of the model's forward pass alone at batch 1, on batches collated before:
    the runtime's own speed, without predict's per-batch row selection and collation."""
    batches = single_batches(trained, texts)
    score = trained.scorer()
    with torch.inference_mode():
        for batch in batches[:warmup]:
            score(trained.model, batch)
        start = time.perf_counter()
        for batch in batches:
            score(trained.model, batch)
    return len(batches) / (time.perf_counter() - start)


def measure(trained: Trained, test: pd.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    head = test.head(args.batch1_examples)
    batch1, _ = rate(trained, head, 1, args.warmup)
    batch64, scores = rate(trained, test, 64, args.warmup)
    return {
        "batch1_examples_per_s": batch1,
        "batch1_forward_examples_per_s": forward_rate(trained, head, args.warmup),
        "batch64_examples_per_s": batch64,
        "scores": scores,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)  # export.ort_session gives ONNX Runtime as many
    reference = load_trained(args.model_dir)
    task = reference.task
    test = pd.read_parquet(args.data_dir / "tasks" / task.name / "test.parquet")
    test = test.head(args.limit) if args.limit else test
    labels = np.asarray([task.labels.index(label) for label in test["label"]])
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        loaded = {
            "torch_fp32": reference,
            "onnx_fp32": load_export(export_model(args.model_dir, out_dir=Path(scratch) / "fp32")),
            "onnx_int8": load_export(
                export_model(args.model_dir, quantize="int8", out_dir=Path(scratch) / "int8")
            ),
        }
        for name in VARIANTS:
            results[name] = measure(loaded[name], test, args)
    predicted = {name: r.pop("scores").argmax(-1) for name, r in results.items()}
    base = results["torch_fp32"]
    for name, r in results.items():
        r["accuracy"] = float((predicted[name] == labels).mean())
        r["agreement_with_torch_fp32"] = float((predicted[name] == predicted["torch_fp32"]).mean())
        for key in ("batch1", "batch1_forward", "batch64"):
            speed = f"{key}_examples_per_s"
            r[f"{key}_speedup"] = r[speed] / base[speed]
    report = {
        "model_dir": str(args.model_dir),
        "task": task.name,
        "test_examples": len(test),
        "batch1_examples": min(args.batch1_examples, len(test)),
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "variants": results,
    }
    print_table(report)
    write_json(args.out, report)
    print(f"wrote {args.out}")


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['task']} test: {report['test_examples']} texts (batch 1: the first "
        f"{report['batch1_examples']}), {report['threads']} threads"
    )
    print("b1: predict's path at batch 1; b1 fwd: the forward pass alone; x: over torch_fp32")
    header = ["variant", "b1 ex/s", "b1 x", "b1 fwd ex/s", "b1 fwd x", "b64 ex/s", "b64 x"]
    header += ["accuracy", "agreement"]
    print(f"{header[0]:<12}" + "".join(f"{h:>12}" for h in header[1:]))
    for name, r in report["variants"].items():
        cells = [r[f"{key}{end}"] for key in ("batch1", "batch1_forward", "batch64")
                 for end in ("_examples_per_s", "_speedup")]  # fmt: skip
        cells += [r["accuracy"], r["agreement_with_torch_fp32"]]
        print(f"{name:<12}" + "".join(f"{c:>12.3f}" if c < 10 else f"{c:>12.1f}" for c in cells))


if __name__ == "__main__":
    main()
