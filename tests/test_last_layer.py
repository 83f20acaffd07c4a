"""models.last_layer: the last layer at the positions read: the same outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PromptTuningConfig, TaskType, get_peft_model
from transformers import (
    AutoModel,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from bertfit.models.heads import MultiTaskModel, load_classifier
from bertfit.models.last_layer import first_token_only, read_at
from bertfit.models.pooling import HeadSpec, PooledClassifier

SIZES = {
    "vocab_size": 120,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "num_labels": 3,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Four texts of different lengths (padded), ids clear of the special tokens."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 120, (4, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, length in enumerate((11, 7, 3, 9)):
        attention_mask[row, length:] = 0
        input_ids[row, length:] = 1  # RoBERTa's padding id (BERT's is 0; masked either way)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def pair(model: torch.nn.Module, encoder_of=lambda m: m.base_model):
    """The model as transformers runs it, and a copy whose last layer runs at [CLS] only."""
    fast = copy.deepcopy(model)
    assert first_token_only(encoder_of(fast))
    return model, fast


def assert_same_logits_and_gradients(model, fast, inputs, labels) -> None:
    model.train(), fast.train()  # dropout 0 in SIZES: train mode, the same function
    reference = model(**inputs, labels=labels)
    result = fast(**inputs, labels=labels)
    torch.testing.assert_close(result.logits, reference.logits, atol=1e-5, rtol=1e-4)
    reference.loss.backward()
    result.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    fast_grads = {n: p.grad for n, p in fast.named_parameters() if p.grad is not None}
    assert grads.keys() == fast_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    "model_class, config_class",
    [
        (BertForSequenceClassification, BertConfig),
        (RobertaForSequenceClassification, RobertaConfig),
    ],
)
def test_same_logits_and_gradients_as_every_position(model_class, config_class) -> None:
    torch.manual_seed(0)
    model, fast = pair(model_class(config_class(**SIZES)))
    labels = torch.tensor([0, 2, 1, 2])
    assert_same_logits_and_gradients(model, fast, batch(), labels)
    # the last layer's output is the [CLS] position alone; the weights and their names are kept
    hidden = fast.base_model(**batch(), output_hidden_states=True).hidden_states
    assert hidden[-1].shape == (4, 1, 32) and hidden[-2].shape == (4, 11, 32)
    assert fast.state_dict().keys() == model.state_dict().keys()


def test_eval_mode_with_dropout_matches_and_training_still_drops() -> None:
    torch.manual_seed(0)
    dropout = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    config = BertConfig(**{**SIZES, **dropout})
    model, fast = pair(BertForSequenceClassification(config))
    model.eval(), fast.eval()
    torch.testing.assert_close(fast(**batch()).logits, model(**batch()).logits)
    fast.train()
    assert not torch.equal(fast(**batch()).logits, fast(**batch()).logits)


def test_pooled_and_multitask_classifiers_read_cls_only() -> None:
    torch.manual_seed(0)
    encoder = AutoModel.from_config(BertConfig(**SIZES))
    spec = HeadSpec(feature="concat", feature_layers=2, chunk_pooling=None)
    reference = PooledClassifier(copy.deepcopy(encoder), spec)
    del reference.encoder.encoder.layer[-1].forward  # the reference runs every position
    fast = PooledClassifier(copy.deepcopy(encoder), spec)
    fast.load_state_dict(reference.state_dict())
    assert_same_logits_and_gradients(reference, fast, batch(), torch.tensor([0, 1, 2, 0]))
    assert reference.encoder(**batch()).last_hidden_state.shape == (4, 11, 32)
    multitask = MultiTaskModel(copy.deepcopy(encoder), {})
    assert multitask.encoder(**batch()).last_hidden_state.shape == (4, 1, 32)


def test_prompt_tuning_reads_the_first_virtual_token_the_same() -> None:
    torch.manual_seed(0)
    model, fast = pair(BertForSequenceClassification(BertConfig(**SIZES)))
    config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=4)
    model, fast = get_peft_model(model, config), get_peft_model(fast, config)
    fast.load_state_dict(model.state_dict())
    assert_same_logits_and_gradients(model, fast, batch(1), torch.tensor([1, 1, 0, 2]))


def test_other_architectures_keep_their_layers(tiny_model_dir) -> None:
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    )
    assert not first_token_only(distil.base_model)
    assert distil.base_model(**batch()).last_hidden_state.shape == (4, 11, 32)
    decoder = AutoModel.from_config(BertConfig(**SIZES, is_decoder=True))
    assert not first_token_only(decoder)
    assert decoder(**batch()).last_hidden_state.shape == (4, 11, 32)
    # bertfit's own loader applies it to the encoders it fits (a tiny BERT here)
    loaded = load_classifier(str(tiny_model_dir), ["a", "b"])
    assert loaded.base_model(**batch()).last_hidden_state.shape == (4, 1, 32)


def test_read_at_gives_the_hidden_states_at_the_positions_asked_for() -> None:
    torch.manual_seed(0)
    encoder = AutoModel.from_config(BertConfig(**SIZES))
    inputs = batch(2)
    full = encoder(**inputs).last_hidden_state
    index = torch.tensor([[1, 4, 9], [0, 2, 6], [2, 0, 0], [8, 3, 5]])  # row 2: 1 real, 2 filler
    with read_at(encoder, index) as selective:
        assert selective
        read = encoder(**inputs).last_hidden_state
    assert read.shape == (4, 3, 32)
    torch.testing.assert_close(read, full.gather(1, index[..., None].expand(-1, -1, 32)))
    # outside the block the layer runs at every position again
    torch.testing.assert_close(encoder(**inputs).last_hidden_state, full)
    distil = AutoModel.from_config(
        DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    )
    with read_at(distil, index) as selective:
        assert not selective
        assert distil(**inputs).last_hidden_state.shape == (4, 11, 32)
