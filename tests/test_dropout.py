"""models.dropout: dropout with cheaper draws on a CPU, the same function as torch's."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from bertfit.models.dropout import ATTENTION, Dropout, attention, drop, keep_mask, use_fast_dropout
from bertfit.models.last_layer import first_token_only

SIZES = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
)


def test_each_element_drops_with_probability_p_whichever_share_of_its_draw_it_reads():
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([1_000_000]), 0.1, torch.device("cpu"))
    assert keep.dtype == torch.bool
    dropped = round(0.1 * 2**16) / 2**16  # 0.100006
    assert scale == pytest.approx(1 / (1 - dropped))
    # one 64-bit draw serves four elements: each of its 16-bit shares must be unbiased
    # (a draw whose top bit were always 0 would keep every fourth element more often)
    by_share = (~keep).view(-1, 4).float().mean(0)
    assert torch.all((by_share - dropped).abs() < 0.003), by_share
    # neighbouring elements independent: both dropped about p² of the time
    pairs = (~keep).view(-1, 2).all(1).float().mean()
    assert pairs.item() == pytest.approx(dropped**2, abs=0.002)


def test_drop_keeps_the_expectation_and_its_gradient_is_the_same_mask():
    x = torch.randn(64, 50, 32, requires_grad=True)
    torch.manual_seed(3)
    out = drop(x, 0.25, training=True)
    torch.manual_seed(3)
    keep, scale = keep_mask(x.shape, 0.25, x.device)
    torch.testing.assert_close(out, x.detach() * keep * scale)
    assert ((out == 0) == ~keep).all()
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, keep * scale)
    torch.manual_seed(5)
    ones = drop(torch.ones(2_000_000), 0.25, training=True)
    assert ones.mean().item() == pytest.approx(1.0, abs=0.003)  # E[output] = input


def test_drop_is_the_identity_in_eval_or_at_zero_and_repeatable_under_a_seed():
    x = torch.randn(8, 16)
    assert drop(x, 0.5, training=False) is x
    assert drop(x, 0.0, training=True) is x
    assert torch.equal(drop(x, 1.0, training=True), torch.zeros_like(x))
    torch.manual_seed(11)
    first = drop(x, 0.5, training=True)
    torch.manual_seed(11)
    assert torch.equal(first, drop(x, 0.5, training=True))
    module = Dropout(0.5)
    module.eval()
    assert module(x) is x


def test_attention_is_sdpa_without_dropout_and_the_written_out_product_with_it():
    module = types.SimpleNamespace(is_causal=False, training=True)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[1, :, :, 5:] = False  # the second row's last two keys are padding
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0)
    out, _ = attention(module, q, k, v, mask, dropout=0.0)
    torch.testing.assert_close(out, expected)

    torch.manual_seed(7)
    out, _ = attention(module, q, k, v, mask, dropout=0.2)
    torch.manual_seed(7)
    keep, scale = keep_mask(torch.Size([2, 4, 7, 7]), 0.2, q.device)
    scores = (q @ k.transpose(-2, -1)) / 8**0.5
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1) * keep * scale
    torch.testing.assert_close(out, (probs @ v).transpose(1, 2))
    # padding keys are never attended to, dropped or not
    changed = v.clone()
    changed[1, :, 5:] = 100.0
    torch.manual_seed(7)
    torch.testing.assert_close(attention(module, q, k, changed, mask, dropout=0.2)[0], out)


def test_a_bert_keeps_its_function_and_saves_nothing_of_bertfit(tmp_path: Path):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**SIZES, num_labels=3))
    stock = BertForSequenceClassification(model.config)
    stock.load_state_dict(model.state_dict())
    use_fast_dropout(model)
    assert model.config._attn_implementation == ATTENTION
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert sum(isinstance(m, Dropout) for m in model.modules()) > 0
    ids = torch.randint(5, 120, (3, 9))
    attention_mask = torch.ones_like(ids)
    attention_mask[2, 6:] = 0
    model.eval(), stock.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=attention_mask).logits,
            stock(input_ids=ids, attention_mask=attention_mask).logits,
        )
    model.train()
    out = model(input_ids=ids, attention_mask=attention_mask, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.save_pretrained(tmp_path)
    assert "bertfit" not in (tmp_path / "config.json").read_text()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "sdpa"


def test_the_last_layer_cut_reads_the_attention_bertfit_set():
    torch.manual_seed(1)
    stock = BertForSequenceClassification(BertConfig(**SIZES))
    first_token_only(stock.base_model)
    cut = BertForSequenceClassification(BertConfig(**SIZES))
    cut.load_state_dict(stock.state_dict())
    first_token_only(cut.base_model)
    use_fast_dropout(cut)
    ids = torch.randint(5, 120, (4, 11))
    cut.eval(), stock.eval()
    with torch.no_grad():
        torch.testing.assert_close(cut(input_ids=ids).logits, stock(input_ids=ids).logits)
    cut.train()
    calls = []
    layer = cut.base_model.encoder.layer[-1].attention.self
    original = Dropout.forward

    def counted(self: Dropout, x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return original(self, x)

    Dropout.forward = counted
    try:
        cut(input_ids=ids).logits.sum().backward()
    finally:
        Dropout.forward = original
    assert layer.query.weight.grad is not None
    assert (4, 1, 32) in calls  # the last layer's dropouts at [CLS] only


def test_t5_gets_the_cheaper_hidden_dropout_but_keeps_its_own_attention():
    config = T5Config(
        vocab_size=64,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    model = use_fast_dropout(T5ForConditionalGeneration(config))
    assert model.config._attn_implementation != ATTENTION  # its position bias is its own
    assert not any(type(m) is nn.Dropout for m in model.modules())
    ids = torch.randint(0, 64, (2, 6))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert json.loads(config.to_json_string()).get("_attn_implementation") is None
