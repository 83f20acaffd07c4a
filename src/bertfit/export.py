"""bertfit export: a model directory as ONNX, scored by ONNX Runtime, optionally int8.

    bertfit export MODEL_DIR --format onnx [--quantize int8] [--out DIR] [--metrics PATH]

Writes DIR (default: MODEL_DIR-onnx, or MODEL_DIR-onnx-int8, beside it) holding `model.onnx`,
the tokenizer, config.json and bertfit_model.json: the model's manifest with an `export` entry
(format, file, quantization, opset), so `bertfit predict DIR FILE` and `bertfit serve DIR` read
it as they read MODEL_DIR: the same encoding and truncation (the manifest's preprocessing),
length-sorted batches, temperature and columns, with ONNX Runtime computing the logits
(models.onnx.load_export). The graph is traced by torch.onnx's dynamo exporter from the model
predict loads (models.family.load_trained), with batch and sequence length dynamic; before
anything is written, ONNX Runtime's logits on a sample batch must equal PyTorch's. The
TorchScript exporter is not used: on transformers 5 it traces a graph that ignores its inputs.
`--quantize int8` stores the weights of every matrix product as int8 in blocks with their own
scales and quantizes the activations per block of each token at run time (ONNX Runtime's
MatMulNBits, quantize_int8): faster on CPUs with int8 dot products, and its predictions stay
close to the fp32 model's. The card (README.md) is the model's own, rewritten for the export
(model_card.export_card); its model-index gets evaluate's test metrics beside the validation
ones when evaluate's run.json names this very model (test_scores, `--metrics`).

Exported: encoder classifiers with the architecture's own head (manifest head `stock`), fully
fine-tuned (method `full`), for classification or regression. Refused with the reason: text-to-
text models (their score is a decoder pass per label word), peft adapters (the adapter and its
base are separate modules), pooled and hierarchical heads (bertfit's own pooling, and pieces
of a text regrouped outside the model), and a directory that is an export already. Nothing is
pickled: the graph is protobuf, the tokenizer and manifest JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bertfit import cli
from bertfit.model_card import README_FILE, TestScores, export_card
from bertfit.models.family import Trained, load_trained
from bertfit.models.manifest import MANIFEST_FILE, Manifest, model_fingerprint
from bertfit.models.onnx import (
    EXPORT_KEY,
    ONNX_FILE,
    ExportError,
    OnnxClassifier,
    export_info,
    ort_session,
    why_not_exportable,
)
from bertfit.predict import check_model_dir
from bertfit.reporting import check_writable, file_mode, write_json

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
INT8_BLOCK = 128  # rows of a weight block (a power of 2, at least 16)
QUANTIZATION = {  # what each does, as the export's manifest and model card say it
    "int8": f"each matrix product's weights in blocks of {INT8_BLOCK} input rows with a scale "
    "each, and its activations quantized per block of each token at run time (ONNX Runtime's "
    "MatMulNBits, 8 bits, accuracy level 4); the embeddings, pooler and classifier stay fp32"
}
OPSET = 18
# fp32 ONNX Runtime against PyTorch on the sample batch: float rounding only
ATOL, RTOL = 1e-4, 1e-4
# evaluate's metrics in the project the command runs in; the run.json beside them names the model
DEFAULT_METRICS = Path("reports/evaluate/metrics.json")
EVALUATE_RECORD = "run.json"
SAMPLE_TEXTS = [
    "a short text",
    "a longer text, so the sample batch is padded and its attention mask has zeros in it",
    "one more",
]


def exportable(model_dir: Path) -> Manifest:
    """The manifest of a model export supports; an ExportError saying which kind and why not."""
    manifest, _ = check_model_dir(model_dir)
    if export_info(model_dir) is not None:
        raise ExportError(
            f"{model_dir}: an ONNX export already; export the PyTorch model directory it came from"
        )
    kind = why_not_exportable(manifest)
    if kind is not None:
        raise ExportError(
            f"{model_dir}: {kind}; bertfit export supports fully fine-tuned encoder classifiers "
            "with the stock sequence-classification head (manifest family encoder, head stock, "
            "method full), such as the default models/finetune"
        )
    return manifest


def sample_batch(trained: Trained) -> dict[str, torch.Tensor]:
    """A padded batch built as predict builds one (the model's encoder and collator)."""
    rows = pd.DataFrame({"text": SAMPLE_TEXTS})
    if trained.task.sentence_pair:
        rows["text_pair"] = list(reversed(SAMPLE_TEXTS))
    dataset = trained.encoder().inputs(rows, trained.task)
    features = [c for c in dataset.column_names if c not in ("length", "labels", "label")]
    return dict(trained.collator()(dataset.select_columns(features).to_list()))


def trace_onnx(model: nn.Module, batch: dict[str, torch.Tensor], path: Path) -> None:
    """torch.onnx's dynamo export of `model(**batch).logits`, batch and sequence dynamic."""
    batch_dim, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # the exporter's and its optimizer's notes (a line per folded constant, torchvision's
    # operators skipped) say nothing about a text classifier's graph: warnings and up only
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR if name == "torch.onnx" else logging.WARNING)
    with warnings.catch_warnings():
        # the exporter names a shared dimension once and warns of the other inputs' names
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        program = torch.onnx.export(
            model.eval(),
            (),
            kwargs=batch,
            input_names=list(batch),
            output_names=["logits"],
            dynamic_shapes={name: {0: batch_dim, 1: sequence} for name in batch},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def prepare_graph(source: Path, target: Path) -> None:
    """ONNX Runtime's recommended pre-processing before quantization: shape inference and
    constant folding (its symbolic shape inference does not follow the dynamo exporter's
    graphs, so it is skipped)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(source, target, skip_symbolic_shape=True)


def quantize_int8(prepared: Path, target: Path) -> None:
    """int8 matrix products of a prepared graph, by ONNX Runtime's MatMulNBits: each weight
    matrix in blocks of INT8_BLOCK input rows, a scale per block and output column; at run time
    each token's activations are quantized to int8 per block too (accuracy level 4), and the
    products run on int8 dot products. Chosen over quantize_dynamic, whose one activation scale
    per tensor follows the few outlying hidden dimensions of a BERT layer's input, for
    agreement with the fp32 model on validation (benchmarks/int8_choice.py). The embedding
    tables stay fp32: quantized per tensor, they too move predictions."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=INT8_BLOCK, is_symmetric=True, accuracy_level=4, bits=8
    )
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # it logs a line per tensor to the root logger
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(prepared), algo_config=config)
        quantizer.process()
    finally:
        root.setLevel(level)
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def onnx_logits(path: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    return OnnxClassifier(ort_session(path))(**batch).logits.numpy()


def default_out(model_dir: Path, quantize: str | None) -> Path:
    suffix = "-onnx" + (f"-{quantize}" if quantize else "")
    return model_dir.with_name(model_dir.name + suffix)


def check_out(out_dir: Path) -> None:
    """`out_dir` is new, empty or an earlier export (replaced); anything else is refused."""
    if out_dir.is_file():
        raise ExportError(f"{out_dir}: a file; give --out a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and export_info(out_dir) is None:
        raise ExportError(
            f"{out_dir}: exists and is not an export bertfit wrote; give another --out, or "
            "remove it"
        )
    try:
        check_writable(out_dir.parent)
    except PermissionError as err:
        raise ExportError(f"{err}; or give --out a path you can write") from None


def export_model(
    model_dir: Path,
    fmt: str = "onnx",
    quantize: str | None = None,
    out_dir: Path | None = None,
    metrics_file: Path | None = None,
) -> Path:
    """Export the model in `model_dir` (see the module's docstring); returns the directory.
    `metrics_file`: evaluate's metrics.json whose test scores the card gets (test_scores)."""
    model_dir = Path(model_dir)
    if fmt not in FORMATS or quantize not in (None, *QUANTIZATIONS):
        raise ExportError(f"format must be one of {FORMATS}, quantize one of {QUANTIZATIONS}")
    exportable(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else default_out(model_dir, quantize)
    check_out(out_dir)
    fingerprint = model_fingerprint(model_dir)
    test = test_scores(metrics_file, fingerprint)
    trained = load_trained(model_dir)
    batch = sample_batch(trained)
    with torch.inference_mode():
        expected = trained.model.eval()(**batch).logits.numpy()
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        traced = work / ("fp32.onnx" if quantize else ONNX_FILE)
        trace_onnx(trained.model, batch, traced)
        got = onnx_logits(traced, batch)
        if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            raise RuntimeError(
                f"{model_dir}: the ONNX graph's logits differ from PyTorch's by up to "
                f"{np.abs(got - expected).max():.3g} on the sample batch; the export is wrong"
            )
        if quantize:
            prepare_graph(traced, work / "prepared.onnx")
            quantize_int8(work / "prepared.onnx", work / ONNX_FILE)
            traced.unlink()
            (work / "prepared.onnx").unlink()
            got = onnx_logits(work / ONNX_FILE, batch)
        difference = float(np.abs(got - expected).max())
        measured = {
            "quantize": quantize,
            "inputs": list(batch),
            "sample_max_abs_logit_difference": difference,
            "source_fingerprint": fingerprint,
        }
        info = write_export(trained, model_dir, work, measured)
        write_card(model_dir, work, info, trained.task.name, str(out_dir), test)
        replace_dir(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(
        "exported %s to %s (%s%s); largest |logit difference| from PyTorch on a sample batch %.3g",
        model_dir,
        out_dir / ONNX_FILE,
        fmt,
        f", {quantize}" if quantize else "",
        difference,
    )
    return out_dir


def evaluate_scores(metrics_file: Path, fingerprint: str) -> TestScores:
    """evaluate's test scores in `metrics_file` when the run.json beside it says they are of
    the model with `fingerprint`; an ExportError saying why not otherwise (missing, or the
    scores of another model, or of a model evaluate did not name)."""
    record_file = metrics_file.with_name(EVALUATE_RECORD)
    if not metrics_file.is_file() or not record_file.is_file():
        raise ExportError(
            f"{metrics_file}: not found, or no {EVALUATE_RECORD} beside it; run the evaluate "
            "stage (make repro) on this model, or give --metrics the metrics.json it wrote"
        )
    record = json.loads(record_file.read_text(encoding="utf-8"))
    scored = record.get("model") or {}
    if scored.get("fingerprint") != fingerprint:
        which = (
            f"of {scored.get('dir')} (fingerprint {scored['fingerprint']})"
            if scored.get("fingerprint")
            else f"of a model its {EVALUATE_RECORD} does not name (an older evaluate)"
        )
        raise ExportError(
            f"{metrics_file}: evaluate's scores {which}, not of the model exported "
            f"(fingerprint {fingerprint}); run evaluate on this model (make repro)"
        )
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return TestScores(f"attached from {metrics_file}", metrics, record)


def test_scores(metrics_file: Path | None, fingerprint: str) -> TestScores:
    """The test scores the card gets: those of `metrics_file`, which must be of this model (an
    ExportError otherwise); by default the project's reports/evaluate/metrics.json when it
    exists and is of this model, else none, with the reason. Logged either way."""
    try:
        test = evaluate_scores(Path(metrics_file or DEFAULT_METRICS), fingerprint)
    except ExportError as err:
        if metrics_file is not None:
            raise ExportError(f"{err}, or leave --metrics out") from None
        test = TestScores(f"none attached ({err})")
    if test.metrics:
        values = ", ".join(f"{k} {v:.4f}" for k, v in test.metrics.items() if isinstance(v, float))
        log.info("model card: test metrics %s", f"{values} {test.note}")
    else:
        log.info("model card: no test metrics, %s", test.note)
    return test


def write_card(
    model_dir: Path, work: Path, export: dict, task_name: str, location: str, test: TestScores
) -> None:
    """The export's model card from the model's own (model_card.export_card); a model
    directory without one gives an export without one, said in the log."""
    source = model_dir / README_FILE
    if not source.is_file():
        log.warning("%s: no model card, so the export has none", source)
        return
    card = export_card(
        source.read_text(encoding="utf-8"),
        export,
        task_name,
        location,
        export["source_fingerprint"],
        test,
    )
    (work / README_FILE).write_text(card, encoding="utf-8")


def write_export(
    trained: Trained, model_dir: Path, work: Path, measured: dict[str, Any]
) -> dict[str, Any]:
    """The tokenizer, config.json and the manifest with its `export` entry, beside the graph:
    the format and versions, and `measured` (the quantization, the graph's inputs, its logits'
    difference from PyTorch's, the fingerprint of the directory exported). Returns the entry."""
    import onnxruntime

    trained.tokenizer.save_pretrained(work)
    shutil.copyfile(model_dir / "config.json", work / "config.json")
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest[EXPORT_KEY] = {
        "format": "onnx",
        "file": ONNX_FILE,
        "opset": OPSET,
        "quantization": QUANTIZATION[measured["quantize"]] if measured["quantize"] else None,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    } | measured
    write_json(work / MANIFEST_FILE, manifest)
    return manifest[EXPORT_KEY]


def replace_dir(work: Path, out_dir: Path) -> None:
    """Move the finished export into place; an earlier export there is replaced."""
    # mkdtemp's folder is private: a model another account could not load
    mode = file_mode()
    os.chmod(work, mode | (mode & 0o444) >> 2)  # searchable where readable: 0644 -> 0755
    if out_dir.is_dir():
        shutil.rmtree(out_dir)
    os.replace(work, out_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, help="a model directory finetune wrote")
    parser.add_argument(
        "--format", choices=FORMATS, required=True, help="the exported model's format"
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=None,
        help="int8: dynamic int8 quantization of the weights (default: none, fp32)",
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="evaluate's metrics.json, whose test scores the model card lists beside the "
        "validation ones: refused unless the run.json beside it names this model (default: "
        f"{DEFAULT_METRICS} when it exists and is of this model, else none)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write (default: MODEL_DIR-onnx or MODEL_DIR-onnx-int8, beside it)",
    )


def run(args: argparse.Namespace) -> None:
    cli.configure_logging()
    export_model(args.model_dir, args.format, args.quantize, args.out, args.metrics)
