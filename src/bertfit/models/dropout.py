"""Dropout whose random draws cost a quarter of torch's on a CPU.

On a CPU, torch draws a dropout mask one random number per element (`bernoulli_`): 36 ms for
the 6.3 M attention probabilities of one MiniLM layer at batch 32 x 128, against 2 ms for
their softmax, so dropout's draws were about a fifth of an fp32 MLM step. Here one 64-bit
draw of torch's generator (`randint` over every int64) serves four elements, each keeping its
value when its 16-bit share is at or above a threshold: a drop probability of
round(p * 65536) / 65536 (0.1 -> 0.100006) and the kept values scaled by the inverse of the
keep probability, so the expected output is the input, as in torch's dropout. Same generator,
so `set_seed` makes the draws (`drop`) repeatable. GPUs keep torch's own kernels (fused, and
scaled_dot_product_attention drops inside its fused kernels there); so do eval and p = 0.

The attention probabilities' dropout is inside transformers' attention function, so
BERT-structured encoders (ATTENTION_MODELS, which look their attention up by name in
transformers 5) get `bertfit_sdpa`: transformers' sdpa function where it drops nothing or runs
on a GPU (on a CPU with no dropout, torch's fused flash kernel), else the same product written
out (scores, mask, softmax, this dropout, values), as torch's own CPU path does when it has a
dropout to apply (its fused CPU kernels refuse one); what it saves is measured in
docs/performance.md, "Cheaper dropout draws". transformers and torch have no hook for
a cheaper dropout draw, hence this module; training.trainer.stage_trainer applies it on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "bertfit_sdpa"  # the config's _attn_implementation while training on a CPU
# encoders whose self-attention is the plain kind `attention` writes out (BERT's structure)
ATTENTION_MODELS = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
SHARES = 2**16  # a drop decision's resolution: one 16-bit share of a 64-bit draw
INT64 = torch.iinfo(torch.int64)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A boolean mask of `shape`, each element kept with probability 1 - round(p * 2**16) /
    2**16 independently, and the scale that keeps the expectation (1 / that probability)."""
    dropped = round(p * SHARES)
    count = shape.numel()
    draws = torch.randint(INT64.min, INT64.max, (-(-count // 4),), dtype=torch.int64, device=device)
    shares = draws.view(torch.int16)[:count].view(shape)
    # int16 shares are uniform over [-32768, 32767]: the lowest `dropped` values drop
    keep = shares >= dropped - SHARES // 2
    return keep, SHARES / (SHARES - dropped)


class _Masked(torch.autograd.Function):
    """x * keep * scale, saving the boolean mask (a byte an element) for the gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def drop(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """torch.nn.functional.dropout, with the cheaper draws on a CPU (the module's doc)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p, x.device)
    return _Masked.apply(x, keep, scale)


class Dropout(nn.Dropout):
    """nn.Dropout drawing its mask with `drop` (same p; a drop-in replacement)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop(x, self.p, self.training)


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, with the probabilities' dropout drawn as `drop` does
    where torch's fused kernels cannot drop (a CPU): [batch, queries, heads, head size].
    Anything but an encoder's plain attention (a causal mask, T5's position bias) goes to
    transformers' sdpa function as it is."""
    plain = not (getattr(module, "is_causal", False) or kwargs.get("is_causal"))
    plain = plain and kwargs.get("position_bias") is None
    if dropout == 0.0 or query.device.type != "cpu" or not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scale, key.transpose(-2, -1))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # sdpa's masks: True where a query may look
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = drop(scores.softmax(-1), dropout, True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap `model`'s nn.Dropout modules for `Dropout` and, where an encoder of
    ATTENTION_MODELS looks its attention up as sdpa, have it use `attention`: in place, the
    same function of the same parameters with cheaper draws. Nothing is saved differently:
    transformers leaves the attention implementation out of config.json."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, child.inplace))
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if (
            getattr(config, "model_type", None) in ATTENTION_MODELS
            and getattr(config, "_attn_implementation", None) == "sdpa"
        ):
            config._attn_implementation = ATTENTION
    return model
