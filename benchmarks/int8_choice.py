"""int8 quantizations of bertfit export's ONNX graph, against the fp32 model on validation.

How `bertfit export --quantize int8` quantizes is chosen here, on the validation split only.
The model directory (default models/finetune) is exported to ONNX fp32 in a scratch folder
(export.export_model); each configuration below, all ONNX Runtime's own tools, quantizes that
graph after the same pre-processing (export.prepare_graph), and is scored on the model's task's
validation split (data/tasks/<task>/validation.parquet, collect's) through predict's path
(inference.model_scores). Per configuration:
- agreement of its predictions with the PyTorch fp32 model's, and how many texts differ, at
  batch 64 and at batch 1 (dynamic quantization's activation scales are taken over a batch);
- the mean |difference| of the calibrated probability of the reference's predicted class;
- accuracy on the validation labels;
- the forward pass's examples/s at batch 1 on the first --speed-examples texts (batches
  collated before timing), the variants interleaved over --rounds rounds, best round each (the
  one least disturbed by other work on the machine), and the speed-up over PyTorch fp32.
The test split is never read: the test figures of the chosen configuration come from
benchmarks/export_speed.py, once.

Configurations (--configs picks some; `export` is what bertfit export does now):
- dynamic_all: quantize_dynamic, every op type it takes (MatMul, Gather: the embedding
  tables), weights int8 per output channel; export's first default.
- dynamic_matmul: MatMul only (the embedding tables stay fp32), per channel.
- dynamic_per_tensor: MatMul only, one weight scale per matrix.
- dynamic_reduce_range: MatMul only, per channel, 7-bit weights (for CPUs without VNNI).
- dynamic_ffn_out_fp32: MatMul only, per channel, the feed-forward output products (their
  input is the GELU's, the widest activation range) left fp32.
- dynamic_early_ffn_fp32: MatMul only, per channel, both feed-forward products of the first
  three layers left fp32 (the six products that moved the scores most when quantized alone).
- static_qdq_minmax, static_qdq_percentile: quantize_static, QDQ, MatMul only, activations
  uint8 with ranges from 256 train texts (MinMax, or the 99.999th percentile), weights int8 per
  channel.
- nbits8_b32, nbits8_b128, nbits4_b32: MatMulNBits (matmul_nbits_quantizer): weights in blocks
  of 32 or 128 input rows, each block its own scale (symmetric), and accuracy level 4: the
  activations quantized to int8 per block of each token at run time, int8 dot products.
- nbits8_b128_gather: nbits8_b128 after quantize_dynamic made the embedding tables int8.

    python benchmarks/int8_choice.py [--threads 2] [--configs export nbits8_b32 ...]

Prints a table and writes it as JSON to --out (default reports/benchmarks/int8_choice.json).
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from export_speed import single_batches  # this folder: the same batch-1 inputs as that benchmark
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)

from bertfit.calibration import probabilities
from bertfit.export import export_model, prepare_graph, quantize_int8
from bertfit.inference import NOT_INPUTS, model_scores
from bertfit.models.family import Trained, load_trained
from bertfit.models.manifest import MANIFEST_FILE
from bertfit.models.onnx import ONNX_FILE, load_export
from bertfit.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_TEXTS = 256  # static quantization's train texts
Quantizer = Callable[[Path, Path, Trained, pd.DataFrame], None]


def weight_matmuls(graph: Path) -> list[onnx.NodeProto]:
    """The graph's MatMuls by a weight (an initializer), in graph order: layer by layer."""
    model = onnx.load(graph)
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def ffn_matmuls(graph: Path) -> list[str]:
    """The feed-forward products (a weight with the intermediate size, the widest), in order:
    in, out of the first layer, then of the next."""
    model = onnx.load(graph)
    dims = {init.name: list(init.dims) for init in model.graph.initializer}
    nodes = weight_matmuls(graph)
    widest = max(max(dims[n.input[1]]) for n in nodes)
    return [n.name for n in nodes if widest in dims[n.input[1]]]


def dynamic(**options: Any) -> Quantizer:
    def quantize(prepared: Path, out: Path, fp32: Trained, train: pd.DataFrame) -> None:
        quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, **options)

    return quantize


def dynamic_except(pick: Callable[[list[str]], list[str]]) -> Quantizer:
    """Dynamic, MatMul only, per channel, the feed-forward products `pick` chooses left fp32."""

    def quantize(prepared: Path, out: Path, fp32: Trained, train: pd.DataFrame) -> None:
        quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=pick(ffn_matmuls(prepared)))  # fmt: skip

    return quantize


def nbits(bits: int, block: int, gather: bool = False) -> Quantizer:
    """MatMulNBits; with `gather`, the embedding tables int8 first (quantize_dynamic)."""

    def quantize(prepared: Path, out: Path, fp32: Trained, train: pd.DataFrame) -> None:
        if gather:
            quantize_dynamic(prepared, out, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["Gather"])  # fmt: skip
        config = DefaultWeightOnlyQuantConfig(
            block_size=block, is_symmetric=True, accuracy_level=4, bits=bits
        )
        quantizer = MatMulNBitsQuantizer(onnx.load(out if gather else prepared), algo_config=config)
        quantizer.process()
        quantizer.model.save_model_to_file(str(out), False)

    return quantize


class Batches(CalibrationDataReader):
    """Calibration batches for quantize_static: train texts encoded as predict encodes them,
    padded to the model's input length (its calibrators stack batches of one shape)."""

    def __init__(self, fp32: Trained, texts: pd.DataFrame) -> None:
        from transformers import DataCollatorWithPadding

        dataset = fp32.encoder().inputs(texts[["text"]], fp32.task)
        rows = dataset.select_columns([c for c in dataset.column_names if c not in NOT_INPUTS])
        length = fp32.manifest.preprocessing.max_seq_length
        pad = DataCollatorWithPadding(fp32.tokenizer, padding="max_length", max_length=length)
        rows = rows.to_list()
        padded = [pad(rows[i : i + 16]) for i in range(0, len(rows), 16)]
        self.batches = iter([{k: v.numpy() for k, v in batch.items()} for batch in padded])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def static(method: CalibrationMethod) -> Quantizer:
    def quantize(prepared: Path, out: Path, fp32: Trained, train: pd.DataFrame) -> None:
        quantize_static(
            prepared, out, Batches(fp32, train.sample(CALIBRATION_TEXTS, random_state=0)),
            quant_format=QuantFormat.QDQ, per_channel=True, op_types_to_quantize=["MatMul"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=method, extra_options={"MatMulConstBOnly": True},
        )  # fmt: skip

    return quantize


def exported(prepared: Path, out: Path, fp32: Trained, train: pd.DataFrame) -> None:
    quantize_int8(prepared, out)


CONFIGS: dict[str, Quantizer] = {
    "export": exported,
    "dynamic_all": dynamic(per_channel=True),
    "dynamic_matmul": dynamic(per_channel=True, op_types_to_quantize=["MatMul"]),
    "dynamic_per_tensor": dynamic(per_channel=False, op_types_to_quantize=["MatMul"]),
    "dynamic_reduce_range": dynamic(
        per_channel=True, reduce_range=True, op_types_to_quantize=["MatMul"]
    ),
    "dynamic_ffn_out_fp32": dynamic_except(lambda ffn: ffn[1::2]),
    "dynamic_early_ffn_fp32": dynamic_except(lambda ffn: ffn[:6]),
    "static_qdq_minmax": static(CalibrationMethod.MinMax),
    "static_qdq_percentile": static(CalibrationMethod.Percentile),
    "nbits8_b32": nbits(8, 32),
    "nbits8_b128": nbits(8, 128),
    "nbits4_b32": nbits(4, 32),
    "nbits8_b128_gather": nbits(8, 128, gather=True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models/finetune")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--threads", type=int, default=2, help="PyTorch's and ONNX Runtime's")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--speed-examples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks/int8_choice.json")
    return parser.parse_args(argv)


def fidelity(trained: Trained, texts: pd.DataFrame, reference: np.ndarray, labels: np.ndarray,
             temperature: float) -> dict[str, Any]:  # fmt: skip
    """Agreement with the reference's predictions at batch 64 and 1, the probability shift of
    its predicted class, and accuracy."""
    dataset = trained.encoder().inputs(texts[["text"]], trained.task)
    predicted = reference.argmax(-1)
    rows = np.arange(len(predicted))
    p_ref = probabilities(reference, temperature)[rows, predicted]
    out: dict[str, Any] = {}
    for batch in (64, 1):
        scores = model_scores(trained, dataset, trained.task, batch, False, True)
        p = probabilities(scores, temperature)[rows, predicted]
        out[f"agreement_b{batch}"] = float((scores.argmax(-1) == predicted).mean())
        out[f"differ_b{batch}"] = int((scores.argmax(-1) != predicted).sum())
        out[f"mean_abs_prob_shift_b{batch}"] = float(np.abs(p - p_ref).mean())
        out[f"accuracy_b{batch}"] = float((scores.argmax(-1) == labels).mean())
    return out


def forward_speeds(variants: dict[str, Trained], texts: pd.DataFrame, rounds: int) -> dict:
    """Examples/s of the forward pass at batch 1, variants interleaved, best round each."""
    batches = {name: single_batches(trained, texts) for name, trained in variants.items()}
    best = dict.fromkeys(variants, 0.0)
    with torch.inference_mode():
        for _ in range(rounds):
            for name, trained in variants.items():
                score = trained.scorer()
                for batch in batches[name][:8]:  # warm-up
                    score(trained.model, batch)
                start = time.perf_counter()
                for batch in batches[name]:
                    score(trained.model, batch)
                speed = len(batches[name]) / (time.perf_counter() - start)
                best[name] = max(best[name], speed)
    return best


def quantized_dir(fp32_dir: Path, out_dir: Path, make: Quantizer, fp32: Trained,
                  train: pd.DataFrame) -> Path:  # fmt: skip
    """A copy of the fp32 export whose graph `make` quantized (the manifest says int8)."""
    import json

    shutil.copytree(fp32_dir, out_dir, ignore=shutil.ignore_patterns(ONNX_FILE))
    prepared = out_dir / "prepared.onnx"
    prepare_graph(fp32_dir / ONNX_FILE, prepared)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizers log a line per tensor to the root logger
    try:
        make(prepared, out_dir / ONNX_FILE, fp32, train)
    finally:
        root.setLevel(level)
    prepared.unlink()
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    manifest["export"]["quantize"] = "int8"
    write_json(out_dir / MANIFEST_FILE, manifest)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)  # models.onnx.ort_session gives ONNX Runtime as many
    reference = load_trained(args.model_dir)
    task, temperature = reference.task, reference.manifest.temperature
    split = args.data_dir / "tasks" / task.name
    validation = pd.read_parquet(split / "validation.parquet")
    train = pd.read_parquet(split / "train.parquet")
    labels = np.asarray([task.labels.index(label) for label in validation["label"]])
    dataset = reference.encoder().inputs(validation[["text"]], task)
    ref_scores = model_scores(reference, dataset, task, 64, False, True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        fp32_dir = export_model(args.model_dir, out_dir=Path(scratch) / "fp32")
        fp32 = load_export(fp32_dir)
        variants = {"torch_fp32": reference, "onnx_fp32": fp32}
        for name in args.configs:
            out = quantized_dir(fp32_dir, Path(scratch) / name, CONFIGS[name], fp32, train)
            variants[name] = load_export(out)
            results[name] = {"size_mb": (out / ONNX_FILE).stat().st_size / 2**20}
            results[name] |= fidelity(variants[name], validation, ref_scores, labels, temperature)
            print(name, results[name], flush=True)
        speeds = forward_speeds(variants, validation.head(args.speed_examples), args.rounds)
    for name, speed in speeds.items():
        results.setdefault(name, {})["b1_forward_examples_per_s"] = speed
        results[name]["b1_forward_speedup"] = speed / speeds["torch_fp32"]
    report = {
        "model_dir": str(args.model_dir),
        "task": task.name,
        "split": "validation",
        "examples": len(validation),
        "reference_accuracy": float((ref_scores.argmax(-1) == labels).mean()),
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "configs": results,
    }
    print_table(report)
    write_json(args.out, report)
    print(f"wrote {args.out}")


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['task']} validation: {report['examples']} texts, PyTorch fp32 accuracy "
        f"{report['reference_accuracy']:.4f}; agreement with it at batch 64 / 1; b1 fwd x: the "
        f"forward pass at batch 1 over PyTorch fp32's, {report['threads']} threads"
    )
    header = ["config", "agree b64", "differ", "agree b1", "differ", "|dp|", "acc", "b1 fwd x"]
    print(f"{header[0]:<24}" + "".join(f"{h:>10}" for h in header[1:]))
    for name, r in report["configs"].items():
        cells = [r.get(k) for k in ("agreement_b64", "differ_b64", "agreement_b1", "differ_b1",
                                    "mean_abs_prob_shift_b64", "accuracy_b64",
                                    "b1_forward_speedup")]  # fmt: skip
        print(f"{name:<24}" + "".join("-".rjust(10) if c is None else f"{c:>10.4g}" for c in cells))


if __name__ == "__main__":
    main()
