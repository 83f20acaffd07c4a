"""The tuning-method seam: one module per method, registered here by its params name.

`full` (every weight), `prompt_tuning` and `lora` (a peft adapter on the frozen model, its base
in `base/`), `contrastive` (SetFit's sentence pairs, then a logistic head; its own training
loop); models.methods.base says what a method decides. Adding a method is its module
and its entry in METHODS (and its own hyperparameters in bertfit.params).
"""

from __future__ import annotations

from pathlib import Path

from bertfit.models.manifest import Manifest
from bertfit.models.methods.base import TuningMethod
from bertfit.models.methods.contrastive import Contrastive
from bertfit.models.methods.full import Full
from bertfit.models.methods.lora import Lora
from bertfit.models.methods.prompt_tuning import PromptTuning

METHODS: dict[str, TuningMethod] = {
    m.name: m for m in (Full(), PromptTuning(), Lora(), Contrastive())
}


def method_in(manifest: Manifest, model_dir: Path) -> TuningMethod:
    """The method a directory bertfit wrote was trained with; a readable error for others."""
    if manifest.method not in METHODS:
        raise ValueError(
            f"{model_dir}: tuning method {manifest.method!r} is not known; known: {list(METHODS)}"
        )
    return METHODS[manifest.method]
