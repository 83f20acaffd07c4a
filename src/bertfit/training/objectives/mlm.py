"""The masked-LM objective of further pretraining (Sun et al. 2019, 5.4; BERT's MLM).

Dynamic masking (a fresh 15 % mask, 80/10/10, every time a block is seen) and optional whole-word
masking come from transformers' DataCollatorForLanguageModeling; the reference code masked once,
statically. The mask token and the special tokens never masked are the tokenizer's own ([MASK] and
[CLS] for BERT, <mask> and <s> for RoBERTa); whole words come from token offsets, so they work for
byte-level BPE and sentencepiece as for WordPiece, and a tokenizer whose offsets hide the words is
refused. A held-out set in which no token was masked is an error, not a NaN loss.

Texts are packed into full `max_seq_length` blocks by default, as run_mlm does, so no compute goes
to padding; line-by-line is an option. Held-out text is masked once with a fixed
seed and scored before and after training (loss, perplexity, accuracy at the masked tokens).

Logits and loss are computed only at the masked positions: BertForMaskedLM projects every
position onto the whole vocabulary (batch × length × 30k logits) and then ignores the 85 % whose
label is -100; gathering the encoder's hidden states at the masked positions first, and running
the MLM head on those alone, gives the same loss with about a seventh of the head's work and
memory. Transformers has no such option, hence `use_masked_positions`. The encoder's last layer
likewise runs at the masked positions only (models.last_layer).

`MaskedLM` is what the pretrain stage calls; a span-corruption objective for the seq2seq family
sits beside it with the same methods.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import MaskedLMOutput

from bertfit.models.family import pad_multiple
from bertfit.models.last_layer import read_at
from bertfit.models.loading import (
    LOAD_KWARGS,
    check_max_seq_length,
    load_config,
    load_with_fresh_head,
    resolve_model_name,
)
from bertfit.params import PretrainParams
from bertfit.training.objectives.common import (
    check_corpus,
    heldout_batches,
    heldout_scores,
    tokenize_and_pack,
)

log = logging.getLogger(__name__)

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
    """(mean cross-entropy over the masked tokens, logits at the masked positions only).

    The encoder's last layer runs at the masked positions alone where it can (models.last_layer);
    the logits come in the order of `labels[labels != -100]` either way."""
    masked = labels != -100
    counts = masked.sum(1)
    # each row's masked positions first, in order (a stable sort), cut to the most in one row
    index = torch.argsort((~masked).to(torch.int8), dim=1, stable=True)[:, : int(counts.max())]
    read = torch.arange(index.shape[1], device=labels.device)[None, :] < counts[:, None]
    with read_at(model.base_model, index) if masked.any() else nullcontext(False) as selective:
        hidden = model.base_model(input_ids=input_ids, **encoder_inputs, return_dict=True)
    logits = mlm_head(model)(hidden.last_hidden_state[read if selective else masked])
    if not masked.any():
        # a batch in which no token drew a mask teaches nothing: loss 0 (still in the graph, so
        # DDP sees every parameter), not the NaN mean over no tokens that would make every
        # weight NaN; a corpus where this is the rule is refused (MaskedLM.heldout)
        return logits.sum(), logits
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


def tokenize_corpus(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, params: PretrainParams, where: str
) -> Dataset:
    """Token blocks for MLM: packed into full max_seq_length blocks, or one text per example."""
    check_corpus(texts, params, where)
    wwm = params.whole_word_mask

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(
            batch["text"],
            return_special_tokens_mask=True,
            return_offsets_mapping=wwm,
            truncation=not params.packing,
            max_length=None if params.packing else params.max_seq_length,
            verbose=False,
        )

    block = params.max_seq_length if params.packing else None
    block_name = f"pretrain.max_seq_length={params.max_seq_length}"
    return tokenize_and_pack(texts, tokenize, block, block_name, where)


class MLMCollator(DataCollatorForLanguageModeling):
    """DataCollatorForLanguageModeling that also pads `offset_mapping` for whole-word masking.

    tokenizer.pad cannot pad the offsets, so unequal lengths (line-by-line texts) fail in the
    library's collator; padded positions get (0, 0) and, being special tokens, are never masked.

    It also keeps BERT's 80/10/10 replacement under whole-word masking: transformers 5 falls back
    to 100 % [MASK] there, although its masking code handles the split per token, which is what
    BERT's own whole-word masking does (each token of a chosen word decides on its own).
    """

    def __post_init__(self) -> None:
        replace = (self.mask_replace_prob, self.random_replace_prob)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Random token replacement is not supported")
            super().__post_init__()
        self.mask_replace_prob, self.random_replace_prob = (float(p) for p in replace)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if not (self.whole_word_mask and examples and "offset_mapping" in examples[0]):
            return super().torch_call(examples)
        width = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        padded = [
            e
            | {
                "offset_mapping": list(e["offset_mapping"])
                + [[0, 0]] * (width - len(e["offset_mapping"]))
            }
            for e in examples
        ]
        return super().torch_call(padded)


# three words, to see where a tokenizer's offsets put the word boundaries
WORD_PROBE = "masked language models"


def check_mask_token(tokenizer: PreTrainedTokenizerBase, model_name: str) -> None:
    """The tokenizer names a mask token in its vocabulary, whatever its spelling ([MASK],
    <mask>): the collator writes tokenizer.mask_token_id at the chosen positions."""
    mask_id = tokenizer.mask_token_id
    if tokenizer.mask_token is None or mask_id is None or mask_id == tokenizer.unk_token_id:
        raise ValueError(
            f"model.name {model_name!r}: its tokenizer ({type(tokenizer).__name__}) has no mask "
            f"token in its vocabulary (mask_token {tokenizer.mask_token!r}), which masked-LM "
            f"pretraining writes at the masked positions. Set mask_token in the directory's "
            f"tokenizer_config.json to the one the model was trained with ([MASK] for BERT, "
            f"<mask> for RoBERTa), or use pretrain.corpus: none"
        )


def check_word_boundaries(tokenizer: PreTrainedTokenizerBase, model_name: str) -> None:
    """Whole-word masking can find this tokenizer's words.

    transformers 5's DataCollatorForLanguageModeling finds words from token offsets, not from
    WordPiece's `##`: a token that starts where the one before it ended continues its word. That
    works for WordPiece, byte-level BPE with trimmed offsets (RoBERTa's default) and
    sentencepiece, but needs a fast tokenizer's offsets, and offsets that leave out the space
    before a word: with the space in (trim_offsets=False) a whole text is one word, masked whole
    or not at all. The collator's own word split (a private static method; transformers has no
    public one) is asked about a three-word probe, so the check sees what training will.
    """
    where = f"model.name {model_name!r}: pretrain.whole_word_mask"
    if not tokenizer.is_fast:
        raise ValueError(
            f"{where} finds words from token offsets, which {type(tokenizer).__name__} (not a "
            f"fast tokenizer) does not give; save the model with a tokenizer.json or set "
            f"pretrain.whole_word_mask: false"
        )
    probe = tokenizer([WORD_PROBE], return_offsets_mapping=True, return_special_tokens_mask=True)
    word_ids, _ = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(
        np.array(probe["offset_mapping"]), np.array(probe["special_tokens_mask"])
    )
    words = max(int(word_ids.max()), 0)
    if words < len(WORD_PROBE.split()):
        raise ValueError(
            f"{where} finds words from gaps between token offsets (transformers' "
            f"DataCollatorForLanguageModeling), but {type(tokenizer).__name__}'s offsets make "
            f"{WORD_PROBE!r} {words} word(s), not {len(WORD_PROBE.split())}: they include the "
            f"space before a word (a byte-level BPE saved with trim_offsets=False?), so whole "
            f"texts would be masked as one word. Save the tokenizer with trim_offsets=True, or "
            f"set pretrain.whole_word_mask: false"
        )


def check_masked(
    batches: list[dict[str, torch.Tensor]], dataset: Dataset, params: PretrainParams, where: str
) -> None:
    """Some token of the masked set is masked; else say why none could be."""
    if any((b["labels"] != -100).any() for b in batches):
        return
    tokens = sum(len(x) for x in dataset["input_ids"])
    maskable = tokens - sum(sum(x) for x in dataset["special_tokens_mask"])
    if maskable == 0:
        cause = (
            f"all {tokens} of its tokens are the tokenizer's special tokens, which are never "
            f"masked: the tokenizer turns the text into nothing else; check model.name's "
            f"tokenizer (its vocabulary and special tokens)"
        )
    else:
        cause = (
            f"pretrain.mlm_probability={params.mlm_probability} chose none of its {maskable} "
            f"maskable tokens; raise it, or add held-out text"
        )
    raise ValueError(
        f"{where}: no token was masked, so the masked-LM loss has nothing to score ({cause})"
    )


def masked_sums(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[float, int, int]:
    """A held-out batch's summed masked-token loss, correct predictions and masked tokens."""
    encoder_inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
    loss, logits = masked_lm_outputs(model, batch["input_ids"], batch["labels"], **encoder_inputs)
    n = int((batch["labels"] != -100).sum())
    correct = int((logits.argmax(-1) == batch["labels"][batch["labels"] != -100]).sum())
    return float(loss) * n, correct, n


def mlm_scores(model: PreTrainedModel, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Held-out masked-token loss (token-weighted), perplexity and accuracy."""
    return heldout_scores(model, batches, masked_sums, "masked_tokens")


def load_masked_lm(model_name: str) -> tuple[PreTrainedModel, bool]:
    """The model's masked-LM class, and whether its head is fresh: a checkpoint without MLM-head
    weights (the embedded MiniLM) gets a fresh head, said here once (transformers' report of it
    is held back), and its pooler goes unused until encoder_with_pooler puts it back."""
    config = load_config(model_name)
    try:
        model, fresh = load_with_fresh_head(AutoModelForMaskedLM, model_name, unused=("pooler.",))
    except ValueError as err:
        raise ValueError(
            f"model.name {model_name!r} ({config.model_type}): this architecture has no "
            f"masked-LM form ({err}); use pretrain.corpus: none or an encoder such as BERT"
        ) from err
    if fresh:
        log.info(
            "%s has no masked-LM head weights (%d missing, e.g. %s): the head starts fresh",
            model_name,
            len(fresh),
            fresh[0],
        )
    return model, bool(fresh)


def encoder_with_pooler(model_name: str, mlm_model: PreTrainedModel) -> PreTrainedModel:
    """The pretrained encoder in the base model's own class, keeping the base pooler.

    *ForMaskedLM models have no pooler, so saving one as is would leave finetune a random pooler
    where the plain fine-tuning baseline has the base model's: the comparison would be unfair.
    """
    base = AutoModel.from_pretrained(resolve_model_name(model_name), **LOAD_KWARGS)
    missing, unexpected = base.load_state_dict(mlm_model.base_model.state_dict(), strict=False)
    if unexpected or any("pooler" not in k for k in missing):
        raise RuntimeError(
            f"encoder weights do not match the base model: missing {missing}, "
            f"unexpected {unexpected}"
        )
    return base


class MaskedLM:
    """Further pretraining with BERT's masked-LM objective, as the pretrain stage runs it."""

    name = "mlm"
    # keep offset_mapping for whole-word masking
    trainer_arguments: ClassVar[dict[str, Any]] = {"remove_unused_columns": False}

    def __init__(self, params: PretrainParams, model_name: str) -> None:
        self.params = params
        self.model_name = model_name
        self.fresh_head = False  # whether load_model gave the MLM head fresh weights

    def load_model(self) -> PreTrainedModel:
        model, self.fresh_head = load_masked_lm(self.model_name)
        check_max_seq_length(model.config, self.params.max_seq_length, self.model_name)
        return model

    def tokenize(self, texts: list[str], tokenizer: PreTrainedTokenizerBase, where: str) -> Dataset:
        return tokenize_corpus(texts, tokenizer, self.params, where)

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> MLMCollator:
        check_mask_token(tokenizer, self.model_name)
        if self.params.whole_word_mask:
            check_word_boundaries(tokenizer, self.model_name)
        return MLMCollator(
            tokenizer,
            mlm_probability=self.params.mlm_probability,
            whole_word_mask=self.params.whole_word_mask,
            pad_to_multiple_of=pad_multiple(),
        )

    def heldout(self, dataset: Dataset, collator: MLMCollator) -> list[dict[str, torch.Tensor]]:
        """The held-out blocks to score, capped and masked once with a fixed seed."""
        capped, batches = heldout_batches(dataset, collator, self.params)
        check_masked(batches, capped, self.params, "corpus held-out")
        return batches

    def score(self, model: PreTrainedModel, heldout: list[dict[str, torch.Tensor]]) -> dict:
        return mlm_scores(model, heldout)

    def head_parameters(self, model: PreTrainedModel) -> list[nn.Parameter]:
        """The MLM head's own weights: its transform and output bias, not the decoder tied to
        the input embeddings (which belong to the encoder)."""
        encoder = {id(p) for p in model.base_model.parameters()}
        return [p for p in mlm_head(model).parameters() if id(p) not in encoder]

    def for_training(self, model: PreTrainedModel) -> None:
        use_masked_positions(model)

    def after_training(self, model: PreTrainedModel) -> None:
        del model.forward  # back to the class's own forward before scoring and saving

    def export(self, model: PreTrainedModel) -> PreTrainedModel:
        return encoder_with_pooler(self.model_name, model)
