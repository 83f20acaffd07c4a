"""Masked-LM loss computed only at the masked positions.

BertForMaskedLM projects every position onto the whole vocabulary (batch × length × 30k logits)
and then ignores the 85 % of them whose label is -100. Gathering the encoder's hidden states at the
masked positions first, and running the MLM head on those alone, gives the same loss with about a
seventh of the head's work and memory. Transformers has no such option, hence this module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

# attribute of the MaskedLM model that holds its prediction head, by convention of the family
HEAD_ATTRIBUTES = ("cls", "lm_head")


def mlm_head(model: PreTrainedModel) -> nn.Module:
    for name in HEAD_ATTRIBUTES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(
        f"{type(model).__name__}: no masked-LM head found at {list(HEAD_ATTRIBUTES)}; "
        f"masked-position logits support BERT- and RoBERTa-style models"
    )


def masked_lm_outputs(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    **encoder_inputs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy over the masked tokens, logits at the masked positions only)."""
    hidden = model.base_model(input_ids=input_ids, **encoder_inputs, return_dict=True)
    masked = labels != -100
    logits = mlm_head(model)(hidden.last_hidden_state[masked])
    loss = nn.functional.cross_entropy(logits.float(), labels[masked])
    return loss, logits


def use_masked_positions(model: PreTrainedModel) -> PreTrainedModel:
    """Make `model(**batch)` compute logits and loss at the masked positions only.

    The forward is replaced on the instance, not wrapped in a new module, so DDP / accelerate
    still call it through their own wrappers and save_pretrained writes the usual checkpoint.
    """
    mlm_head(model)  # fail early for a model without a known head

    def forward(
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> MaskedLMOutput:
        extra = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            extra["token_type_ids"] = token_type_ids
        loss, logits = masked_lm_outputs(model, input_ids, labels, **extra)
        return MaskedLMOutput(loss=loss, logits=logits)

    model.forward = forward
    return model
