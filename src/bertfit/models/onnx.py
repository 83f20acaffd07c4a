"""A model directory that bertfit export wrote, loaded for scoring by ONNX Runtime.

The directory's manifest has an `export` entry (format, file, quantization); `load_export`
wraps an ONNX Runtime session in a module whose call gives `logits` as a classifier's does, so
the family's score, inference.predict_scores, predict and serve run it unchanged, with the
encoding, truncation and temperature of the manifest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from bertfit.models.family import FAMILIES, Trained
from bertfit.models.loading import load_tokenizer
from bertfit.models.manifest import MANIFEST_FILE, Manifest, read_manifest

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXPORT_KEY = "export"  # the manifest's entry saying the directory is an export
EXPORTED_FAMILY = "encoder"  # export refuses the others (why_not_exportable)
HEAD_WHY = {
    "pooled": "a pooled head (bertfit's own features over layers or pieces; with hierarchical "
    "truncation a text's pieces are regrouped outside the model)",
    "text2text": "a text-to-text model (its score is a decoder pass per label word)",
}


class ExportError(ValueError):
    """A model directory bertfit export cannot export, or an --out it must not overwrite."""


def export_info(model_dir: Path) -> dict[str, Any] | None:
    """The manifest's `export` entry (format, file, quantization), None for a PyTorch model."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get(EXPORT_KEY)


def ort_session(path: Path) -> Any:
    """An ONNX Runtime CPU session on as many threads as PyTorch uses here (OMP_NUM_THREADS)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxClassifier(nn.Module):
    """An ONNX Runtime session behind a classifier's call: `model(**batch).logits`, so the
    family's score and inference.predict_scores run it as they run the PyTorch model."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        # predict_scores moves batches to the device of the model's first parameter
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **batch: torch.Tensor) -> SequenceClassifierOutput:
        missing = [name for name in self.input_names if name not in batch]
        if missing:
            raise ValueError(f"the ONNX model needs inputs {missing}; the batch has {list(batch)}")
        feed = {name: batch[name].cpu().numpy() for name in self.input_names}
        logits = self.session.run(["logits"], feed)[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(logits).to(self.anchor.device))


def load_export(model_dir: Path) -> Trained:
    """An export's ONNX Runtime session in a Trained, as load_trained gives a PyTorch model:
    predict and serve encode, batch, score and calibrate it through the same manifest."""
    info = export_info(model_dir)
    graph = Path(model_dir) / (info or {}).get("file", ONNX_FILE)
    if info is None or info.get("format") != "onnx" or not graph.is_file():
        raise ExportError(
            f"{model_dir}: not an ONNX export ({MANIFEST_FILE}'s export entry: {info}), or "
            f"{graph} is missing; export the model again with bertfit export"
        )
    log.info("%s: ONNX%s, scored by ONNX Runtime", graph, " int8" if info.get("quantize") else "")
    model = OnnxClassifier(ort_session(graph))
    tokenizer = load_tokenizer(str(model_dir))
    return Trained(model, tokenizer, read_manifest(model_dir), FAMILIES[EXPORTED_FAMILY])


def why_not_exportable(manifest: Manifest) -> str | None:
    """What kind of model the manifest describes when export cannot take it, and why; None for
    a fully fine-tuned encoder classifier with the architecture's own head."""
    if manifest.family != EXPORTED_FAMILY or manifest.head != "stock":
        return HEAD_WHY.get(manifest.head, f"a {manifest.family} model with head {manifest.head}")
    if manifest.method != "full":
        return (
            f"a peft adapter (method {manifest.method}) kept apart from its frozen base in "
            "base/; train with finetune.method full to export"
        )
    return None
