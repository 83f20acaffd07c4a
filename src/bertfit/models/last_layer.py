"""The encoder's last layer computed only at the positions that are read from it.

Transformers' encoders compute their last layer at every position, but bertfit reads few of them:
- every classifier reads position 0: the stock heads (BERT's pooler, RoBERTa's and ELECTRA's
  classification heads) and PooledClassifier take `[:, 0]`, the [CLS] token (under prompt
  tuning the first virtual token, which their heads read there too);
- the masked LM reads the masked positions, about 15 % (training.objectives.mlm).
Here the last layer computes its query, attention output and feed-forward block at those
positions alone, attending over the keys and values of every position as before: the same
function of the inputs (up to float rounding). Of a layer's 12·d² multiply-adds per token, the
keys and values (2·d²) still run everywhere, so at [CLS] only it saves 5/6 of the last layer,
about 1/7 of a 6-layer encoder's work; at 15 % masked positions about a ninth.

Transformers has no such option, hence this module. Only the layer's `forward` is replaced on
the instance: weights, names and checkpoints stay as they were. It applies to encoders whose
layers have BERT's structure (`attention.self.query/key/value`, `attention.output`,
`intermediate`, `output`) and, for classifiers, whose heads read position 0 (FIRST_TOKEN_HEADS);
any other model, a decoder, cross-attention, a cache (prefix tuning), or an attention
implementation other than sdpa (these encoders' default) or bertfit's sdpa with a cheaper
dropout (models.dropout) runs the layer's own forward.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from bertfit.models.dropout import ATTENTION

log = logging.getLogger(__name__)

# model types whose sequence-classification head reads the last layer at position 0 only
FIRST_TOKEN_HEADS = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
FIRST = "first"  # query_positions of a classifier's last layer: position 0
# attention implementations taking sdpa's masks: transformers' own and bertfit's (models.dropout)
SDPA = ("sdpa", ATTENTION)


def last_layer(encoder: PreTrainedModel) -> nn.Module | None:
    """The last layer of a BERT-structured encoder (not a decoder), else None."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    decoder = getattr(encoder.config, "is_decoder", False)
    if decoder or not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    attention = getattr(layer, "attention", None)
    attend, output = getattr(attention, "self", None), getattr(attention, "output", None)
    names = ("query", "key", "value", "attention_head_size", "scaling", "dropout")
    if attend is None or output is None or not all(hasattr(attend, n) for n in names):
        return None
    if not all(hasattr(layer, n) for n in ("intermediate", "output")):
        return None
    if not hasattr(layer, "every_position_forward"):
        layer.every_position_forward = layer.forward
        layer.forward = MethodType(selective_forward, layer)
        layer.query_positions = None  # every position until told otherwise
    return layer


def first_token_only(encoder: PreTrainedModel) -> bool:
    """Make a classifier's encoder compute its last layer at position 0 only; True if it does."""
    if encoder.config.model_type not in FIRST_TOKEN_HEADS:
        log.debug("%s: the last layer runs at every position", encoder.config.model_type)
        return False
    layer = last_layer(encoder)
    if layer is not None:
        layer.query_positions = FIRST
    return layer is not None


@contextmanager
def read_at(encoder: PreTrainedModel, index: torch.Tensor) -> Iterator[bool]:
    """Within the block, the last layer computes each row's positions `index` ([batch, m]) only,
    in that order, so last_hidden_state is [batch, m, hidden]; yields False (and changes nothing)
    where the encoder does not allow it."""
    layer = last_layer(encoder)
    if layer is None:
        yield False
        return
    layer.query_positions, before = index, layer.query_positions
    try:
        yield True
    finally:
        layer.query_positions = before


def selective_forward(
    layer: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    *args: Any,
    **kwargs: Any,
) -> torch.Tensor:
    """BertLayer.forward with queries at `layer.query_positions` only: [batch, m, hidden]."""
    attend = layer.attention.self
    positions = layer.query_positions
    if (
        positions is None
        or encoder_hidden_states is not None
        or kwargs.get("past_key_values") is not None
        or attend.config._attn_implementation not in SDPA
    ):
        return layer.every_position_forward(
            hidden_states, attention_mask, encoder_hidden_states, *args, **kwargs
        )
    if positions is FIRST:
        read = hidden_states[:, :1]
    else:
        index = positions[..., None].expand(-1, -1, hidden_states.shape[-1])
        read = hidden_states.gather(1, index)
    batch, queries = read.shape[:2]
    heads = (batch, -1, attend.num_attention_heads, attend.attention_head_size)
    query = attend.query(read).view(heads).transpose(1, 2)
    key = attend.key(hidden_states).view(heads).transpose(1, 2)
    value = attend.value(hidden_states).view(heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4:
        # [batch, 1, q, k]: an encoder's rows are alike (padding only), one serves every query
        attention_mask = attention_mask[:, :, :1]
    attended, _ = ALL_ATTENTION_FUNCTIONS[attend.config._attn_implementation](
        attend,
        query,
        key,
        value,
        attention_mask,
        dropout=attend.dropout.p if attend.training else 0.0,
        scaling=attend.scaling,
    )
    attended = layer.attention.output(attended.reshape(batch, queries, -1), read)
    return layer.output(layer.intermediate(attended), attended)
