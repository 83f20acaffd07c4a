"""Optimiser parameter groups with layer-wise learning-rate decay (Sun et al. 2019, section 5.3.3).

Depth 0 is the embeddings, depth k (1..L) encoder layer k-1, depth L+1 everything above the
encoder (pooler, classifier). The top encoder layer and the heads get the base rate; each layer
below gets ξ times the rate of the one above, and the embeddings ξ^L, the lowest. The reference
code's version did nothing with its default flags and never decayed the embeddings
(REFERENCE.md, protocol faults); here a test reads the optimiser's own groups.

Encoder-decoders (T5, BART) count their encoder blocks first and then the decoder's, since the
decoder sits nearer the output: depth 0 the shared embeddings, 1..E the encoder blocks, E the
encoder's final norm too, E+1..E+D the decoder blocks, E+D+1 the decoder's final norm and the LM
head. With ξ < 1 the top decoder block trains at the base rate and the encoder's bottom block at
ξ^(E+D-1) of it.

Transformers' Trainer has no layer-wise decay, hence this module. Weight decay follows the Trainer:
none on biases and LayerNorm weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from bertfit.models.family import family_of

# `encoder.layer.3.` (BERT), `layers.3.` (many), `block.3.` (T5), `h.3.` (GPT-2)
LAYER_PATTERN = re.compile(r"(?:^|\.)(?:layer|layers|block|h)\.(\d+)\.")


def layer_stacks(config: object) -> tuple[int, int] | None:
    """(encoder, decoder) block counts when the model's family stacks two, else None."""
    return family_of(config).layer_stacks(config)


def num_layers_of(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    stacks = layer_stacks(config)
    if stacks is not None:
        return sum(stacks)
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise ValueError(
            f"{type(model).__name__}: config has no num_hidden_layers; "
            "layer-wise decay needs the encoder depth"
        )
    return n


def is_embedding(param_name: str) -> bool:
    return any(k in param_name for k in ("embeddings", "embed_tokens", "embed_positions")) or (
        param_name.startswith("shared.") or ".shared." in param_name
    )


def layer_depth(param_name: str, num_layers: int, encoder_layers: int | None = None) -> int:
    """The depth of a parameter; `encoder_layers` given: an encoder-decoder (see above)."""
    if is_embedding(param_name):
        return 0
    match = LAYER_PATTERN.search(param_name)
    if encoder_layers is None:
        return int(match.group(1)) + 1 if match else num_layers + 1
    in_decoder = param_name.startswith("decoder.") or ".decoder." in param_name
    if match:
        return int(match.group(1)) + 1 + (encoder_layers if in_decoder else 0)
    if param_name.startswith("encoder.") or ".encoder." in param_name:
        return encoder_layers  # the encoder's final norm, with its top block
    return num_layers + 1


def layer_lr(base_lr: float, layer_decay: float, depth: int, num_layers: int) -> float:
    return base_lr * layer_decay ** max(0, num_layers - depth)


def layerwise_param_groups(
    model: nn.Module,
    base_lr: float,
    layer_decay: float,
    weight_decay: float,
    decay_parameter_names: Iterable[str],
) -> list[dict]:
    """One optimiser group per (depth, weight-decay or not); each carries its `lr` and `depth`."""
    num_layers = num_layers_of(model)
    stacks = layer_stacks(getattr(model, "config", None))
    encoder_layers = stacks[0] if stacks else None
    decayed = set(decay_parameter_names)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = layer_depth(name, num_layers, encoder_layers)
        with_decay = name in decayed
        group = groups.setdefault(
            (depth, with_decay),
            {
                "params": [],
                "names": [],
                "depth": depth,
                "lr": layer_lr(base_lr, layer_decay, depth, num_layers),
                "weight_decay": weight_decay if with_decay else 0.0,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]
