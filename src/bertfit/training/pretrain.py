"""Further masked-LM pretraining of the base model on the collected corpus (Sun et al. 2019, 5.4).

Dynamic masking (a fresh 15 % mask, 80/10/10, every time a block is seen) and optional whole-word
masking come from transformers' DataCollatorForLanguageModeling; the reference code masked once,
statically. Texts are packed into full `max_seq_length` blocks by default, as run_mlm does, so no
compute goes to padding; line-by-line is an option. Logits and loss are computed only at the masked
positions (training.mlm). Checkpoints go to a persistent directory, so a killed stage resumes from
the last one when run again with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import warnings
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from bertfit.models.loading import (
    LOAD_KWARGS,
    check_max_seq_length,
    load_config,
    load_tokenizer,
    resolve_model_name,
)
from bertfit.params import PretrainParams
from bertfit.reporting import split_history, write_csv, write_json
from bertfit.training.hardware import bf16_available, device_arguments
from bertfit.training.mlm import masked_lm_outputs, use_masked_positions

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"


def read_corpus(corpus_dir: Path) -> tuple[list[str], list[str]]:
    frames = []
    for name in ("train", "heldout"):
        path = corpus_dir / f"{name}.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run the collect stage first")
        frames.append(pd.read_parquet(path)["text"].tolist())
    return frames[0], frames[1]


def tokenize_corpus(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, params: PretrainParams, where: str
) -> Dataset:
    """Token blocks for MLM: packed into full max_seq_length blocks, or one text per example."""
    if not texts:
        raise ValueError(
            f"{where}: the corpus is empty; collect built no text for pretrain.corpus="
            f"{params.corpus!r}. Use a task with train or unlabelled text, or pretrain.corpus: none"
        )
    wwm = params.whole_word_mask
    ds = Dataset.from_dict({"text": texts})

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(
            batch["text"],
            return_special_tokens_mask=True,
            return_offsets_mapping=wwm,
            truncation=not params.packing,
            max_length=None if params.packing else params.max_seq_length,
            verbose=False,
        )

    ds = ds.map(tokenize, batched=True, remove_columns=["text"], desc=f"tokenising {where}")
    if not params.packing:
        return ds
    block = params.max_seq_length

    def pack(batch: dict[str, list]) -> dict[str, list]:
        # the whole batch concatenated, cut into full blocks; the remainder is dropped (run_mlm)
        joined = {k: list(chain.from_iterable(v)) for k, v in batch.items()}
        n = len(joined["input_ids"]) // block * block
        return {k: [v[i : i + block] for i in range(0, n, block)] for k, v in joined.items()}

    packed = ds.map(pack, batched=True, batch_size=2000, desc=f"packing {where}")
    if len(packed) == 0:
        total = sum(len(x) for x in ds["input_ids"])
        raise ValueError(
            f"{where}: the corpus has {total} tokens, less than one block of "
            f"pretrain.max_seq_length={block}; add text or lower max_seq_length"
        )
    return packed


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


def cap_heldout(dataset: Dataset, max_blocks: int | None, seed: int) -> Dataset:
    """At most max_blocks held-out examples, a seeded random choice kept in corpus order.

    A 5 % slice of a large corpus (in_domain with IMDb's 50k reviews) is thousands of blocks,
    scored before and after training; a fixed sample of a few hundred measures the change as
    well at a small share of the cost.
    """
    if max_blocks is None or len(dataset) <= max_blocks:
        return dataset
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(dataset), size=max_blocks, replace=False))
    log.info(
        "held-out MLM scored on %d of %d blocks (pretrain.heldout_max_blocks)",
        max_blocks,
        len(dataset),
    )
    return dataset.select(keep)


def fixed_masks(
    dataset: Dataset, collator: MLMCollator, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """Mask the held-out set once with a fixed seed, so before/after scores see the same masks."""
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    rows = dataset.to_list()
    batches = [collator(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    torch.random.set_rng_state(torch_state)
    return batches


@torch.inference_mode()
def mlm_scores(model: PreTrainedModel, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Held-out masked-token loss (token-weighted), perplexity and accuracy."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        encoder_inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")}
        loss, logits = masked_lm_outputs(
            model, batch["input_ids"], batch["labels"], **encoder_inputs
        )
        n = int((batch["labels"] != -100).sum())
        total_loss += float(loss) * n
        correct += int((logits.argmax(-1) == batch["labels"][batch["labels"] != -100]).sum())
        count += n
    loss = total_loss / max(count, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "accuracy": correct / max(count, 1),
        "masked_tokens": count,
    }


def load_masked_lm(model_name: str) -> PreTrainedModel:
    config = load_config(model_name)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            resolve_model_name(model_name), output_loading_info=True, **LOAD_KWARGS
        )
    except ValueError as err:
        raise ValueError(
            f"model.name {model_name!r} ({config.model_type}): this architecture has no "
            f"masked-LM form ({err}); use pretrain.corpus: none or an encoder such as BERT"
        ) from err
    fresh = [k for k in info["missing_keys"] if not k.startswith(model.base_model_prefix)]
    if fresh:
        log.warning(
            "%s has no masked-LM head weights (%d missing, e.g. %s): the head starts fresh",
            model_name,
            len(fresh),
            fresh[0],
        )
    return model


def fingerprint(model_name: str, params: PretrainParams, corpus_dir: Path) -> str:
    h = hashlib.sha256(json.dumps([model_name, params.model_dump()], sort_keys=True).encode())
    for name in ("train", "heldout"):
        h.update((corpus_dir / f"{name}.parquet").read_bytes())
    return h.hexdigest()


def resumable_checkpoint(checkpoint_dir: Path, key: str) -> str | None:
    """The last checkpoint in checkpoint_dir, if the directory holds this very run's."""
    stamp = checkpoint_dir / FINGERPRINT_FILE
    if stamp.is_file() and json.loads(stamp.read_text())["key"] == key:
        return get_last_checkpoint(str(checkpoint_dir))
    return None


def prepare_checkpoints(checkpoint_dir: Path, key: str) -> None:
    """Keep the checkpoints of an interrupted run with the same settings; clear anything else."""
    if resumable_checkpoint(checkpoint_dir, key):
        return
    if checkpoint_dir.exists():
        log.info("%s holds no checkpoint of this run; starting over", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True)
    (checkpoint_dir / FINGERPRINT_FILE).write_text(json.dumps({"key": key}) + "\n")


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


def pass_through(model_name: str, output_dir: Path) -> None:
    """`corpus: none`: the base model, unchanged, where finetune expects the pretrained one."""
    source = Path(resolve_model_name(model_name))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    if source.is_dir():
        shutil.copytree(source, output_dir)
    else:  # a hub id: fetch it once into a standard directory
        load_tokenizer(model_name).save_pretrained(output_dir)
        AutoModel.from_pretrained(model_name, **LOAD_KWARGS).save_pretrained(output_dir)


def training_arguments(params: PretrainParams, checkpoint_dir: Path) -> TrainingArguments:
    # bf16 autocast with fp32 master weights; on a CPU with AVX512-BF16 it is about 1.4x faster
    # than fp32 here (benchmarks/pretrain_throughput.py)
    bf16 = params.mixed_precision == "auto" and bf16_available()
    return TrainingArguments(
        output_dir=str(checkpoint_dir),
        seed=params.seed,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        max_steps=params.max_steps,
        warmup_steps=params.warmup_ratio,  # a float in [0, 1) is a ratio of max_steps
        lr_scheduler_type=params.lr_scheduler_type,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=1,
        logging_steps=params.logging_steps,
        remove_unused_columns=False,  # keep offset_mapping for whole-word masking
        **device_arguments(bf16),
    )


def pretrain(
    model_name: str,
    corpus_dir: Path,
    params: PretrainParams,
    output_dir: Path,
    report_dir: Path,
    checkpoint_dir: Path,
) -> dict[str, Any]:
    """Further-pretrain model_name on the corpus and save a standard HF directory."""
    if params.corpus == "none":
        metrics: dict[str, Any] = {"corpus": "none"}
        state = PartialState()
        if state.is_main_process:
            pass_through(model_name, output_dir)
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            write_json(report_dir / "metrics.json", metrics)
            write_csv(report_dir / "loss.csv", [], ["step", "epoch", "loss", "learning_rate"])
            log.info("pretrain.corpus is none: %s passed through unchanged", model_name)
        state.wait_for_everyone()
        return metrics

    set_seed(params.seed)
    tokenizer = load_tokenizer(model_name)
    model = load_masked_lm(model_name)
    check_max_seq_length(model.config, params.max_seq_length, model_name)
    train_texts, heldout_texts = read_corpus(corpus_dir)
    train_ds = tokenize_corpus(train_texts, tokenizer, params, "corpus train")
    heldout_ds = tokenize_corpus(heldout_texts, tokenizer, params, "corpus held-out")
    collator = MLMCollator(
        tokenizer,
        mlm_probability=params.mlm_probability,
        whole_word_mask=params.whole_word_mask,
        pad_to_multiple_of=8 if torch.cuda.is_available() else None,
    )
    heldout_available = len(heldout_ds)
    heldout_ds = cap_heldout(heldout_ds, params.heldout_max_blocks, params.seed)
    heldout = fixed_masks(heldout_ds, collator, params.per_device_eval_batch_size, params.seed)
    if torch.cuda.is_available():
        model.to("cuda")
    before = mlm_scores(model, heldout)
    log.info("held-out MLM before: %s", before)

    use_masked_positions(model)
    args = training_arguments(params, checkpoint_dir)
    main_process = args.process_index == 0
    key = fingerprint(model_name, params, corpus_dir)
    with args.main_process_first(desc="preparing checkpoints"):
        if main_process:
            prepare_checkpoints(checkpoint_dir, key)
    resume = resumable_checkpoint(checkpoint_dir, key)  # the same answer on every process
    resumed_step = int(Path(resume).name.split("-")[1]) if resume else 0
    if resume:
        log.info("resuming from %s", resume)
    effective = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    tokens_per_block = float(np.mean([len(x) for x in train_ds["input_ids"]]))
    log.info(
        "pretrain %s on %d %s of %.0f tokens (%d held-out); %d steps of %d, lr %g, "
        "mlm_probability %g, whole-word masking %s; device %s, bf16 %s",
        model_name,
        len(train_ds),
        "blocks" if params.packing else "texts",
        tokens_per_block,
        len(heldout_ds),
        params.max_steps,
        effective,
        params.learning_rate,
        params.mlm_probability,
        params.whole_word_mask,
        "cuda" if torch.cuda.is_available() else "cpu",
        args.bf16,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=collator,
        processing_class=tokenizer,
    )
    output = trainer.train(resume_from_checkpoint=resume)
    del model.forward  # back to the class's own forward before saving
    after = mlm_scores(model, heldout)
    log.info("held-out MLM after: %s", after)

    trainer.accelerator.wait_for_everyone()
    if not main_process:
        return {}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent, prefix=".pretrain-") as work:
        staged = Path(work) / "model"
        encoder_with_pooler(model_name, model).save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.move(str(staged), output_dir)
    for done in checkpoint_dir.glob("checkpoint-*"):  # finished: nothing left to resume
        shutil.rmtree(done)

    steps_run = output.global_step - resumed_step
    runtime = output.metrics["train_runtime"]
    metrics = {
        "corpus": params.corpus,
        "heldout_before": before,
        "heldout_after": after,
        "train_blocks": len(train_ds),
        "heldout_blocks": {"scored": len(heldout_ds), "available": heldout_available},
        "world_size": args.world_size,
        "steps": output.global_step,
        "resumed_from_step": resumed_step,
        "train_runtime_s": runtime,
        "tokens_per_s": steps_run * effective * tokens_per_block / runtime if runtime else None,
    }
    write_json(report_dir / "metrics.json", metrics)
    losses, _ = split_history(trainer.state.log_history)
    write_csv(report_dir / "loss.csv", losses, ["step", "epoch", "loss", "learning_rate"])
    return metrics
