from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from bertfit.training.objectives.mlm import mlm_head, use_masked_positions

CONFIG = BertConfig(
    vocab_size=300,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 300, (4, 24), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 18:] = 0
    labels = torch.full_like(input_ids, -100)
    chosen = torch.rand(input_ids.shape, generator=g) < 0.15
    chosen &= attention_mask.bool()
    labels[chosen] = input_ids[chosen]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": labels,
    }


def test_masked_positions_loss_equals_full_vocabulary_loss() -> None:
    torch.manual_seed(0)
    full = BertForMaskedLM(CONFIG).eval()
    fast = use_masked_positions(BertForMaskedLM(CONFIG).eval())
    fast.load_state_dict(full.state_dict())
    inputs = batch()
    n_masked = int((inputs["labels"] != -100).sum())
    expected = full(**inputs)
    got = fast(**inputs)
    assert got.logits.shape == (n_masked, CONFIG.vocab_size)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-6)
    masked = inputs["labels"] != -100
    torch.testing.assert_close(got.logits, expected.logits[masked], rtol=1e-5, atol=1e-5)


def test_masked_positions_gradients_match() -> None:
    torch.manual_seed(0)
    full = BertForMaskedLM(CONFIG)
    fast = use_masked_positions(BertForMaskedLM(CONFIG))
    fast.load_state_dict(full.state_dict())
    inputs = batch(1)
    full(**inputs).loss.backward()
    fast(**inputs).loss.backward()
    for (name, a), (_, b) in zip(full.named_parameters(), fast.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_model_without_mlm_head_is_refused() -> None:
    with pytest.raises(ValueError, match=r"BertForSequenceClassification: no masked-LM head"):
        mlm_head(BertForSequenceClassification(CONFIG))


def test_a_batch_with_no_masked_token_has_zero_loss_not_nan() -> None:
    torch.manual_seed(0)
    model = use_masked_positions(BertForMaskedLM(CONFIG))
    inputs = batch() | {"labels": torch.full((4, 24), -100)}
    loss = model(**inputs).loss
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
