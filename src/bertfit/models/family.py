"""The model-family seam: everything that depends on what kind of model bertfit trains.

A family loads a model for a task, builds its inputs, collates them and, through the `scorer`
it gives for a task, scores a batch into one score per class, shape [batch, num_labels].
Evaluation, model selection, search and prediction call that and nothing family-specific
(lm-evaluation-harness's "score each choice, take the argmax"). The family is chosen from the
model's own config (`is_encoder_decoder`), never its name.

Everything else that differs between the two is the family's too, so no code outside models/
names one: the multitask model, how it is saved and served (`multitask_model`,
`save_multitask`, `serving_base`), its further-pretraining objective (`objective`, a key of
training.pretrain.OBJECTIVES, since models/ does not import training/, and its settings),
peft's task type, the auto class of a bare model, the model card's pipeline tag, the depths of
its layer stacks, whether it has a head to start from multitask and whether it can write its
label as text. How it trains (every weight, or an adapter) is the tuning method's
(models.methods).

- `encoder` (BERT-style): the stock sequence-classification head on the pooled [CLS],
  models.pooling's features and hierarchical chunk pooling, or models.heads' multitask heads;
  its score is the classifier's logits.
- `seq2seq` (T5, mT5, flan-T5, BART: any AutoModelForSeq2SeqLM): text-to-text with a task prefix
  and label words (models.text2text); its score is each label word's log-likelihood.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from peft import PeftModel, TaskType
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from bertfit.data.encoding import Encoder, Preprocessing
from bertfit.data.tasks import Task
from bertfit.inference import predict_scores
from bertfit.models.adapters import BASE_DIR, TaskAdapters, base_fingerprint
from bertfit.models.heads import MultiTaskModel, head_on, load_classifier
from bertfit.models.last_layer import first_token_only
from bertfit.models.loading import (
    LOAD_KWARGS,
    load_config,
    load_tokenizer,
    resolve_model_name,
)
from bertfit.models.manifest import Manifest, read_manifest
from bertfit.models.methods import method_in
from bertfit.models.pooling import ChunkCollator, HeadSpec, PooledClassifier, pooled_classifier
from bertfit.models.text2text import (
    LabelRanker,
    Seq2SeqCollator,
    Text2TextEncoder,
    label_targets,
    regression_values,
    target_words,
    with_targets,
)
from bertfit.params import PretrainParams

Batch = dict[str, torch.Tensor]
Scorer = Callable[[nn.Module, Batch], torch.Tensor]


def pad_multiple() -> int | None:
    """Pad batches to a multiple of 8 on a GPU (tensor cores); on a CPU it only adds work."""
    return 8 if torch.cuda.is_available() else None


class EncoderFamily:
    """BERT-style encoders with a classification head; a batch's scores are its logits."""

    name = "encoder"
    task_type = TaskType.SEQ_CLS  # peft's: an adapter on a sequence classifier
    auto_class = AutoModel  # a bare model (no head), as a pass-through stage saves it
    pipeline_tag = "text-classification"  # the model card's: how the model is called
    multitask_head = "multitask"  # the multitask stage's head: one per task
    objective = "mlm"  # further pretraining's objective (training.pretrain.OBJECTIVES)
    has_head = True  # a classifier head, which finetune can start from multitask's
    generates = False  # it cannot write its label as text (evaluate's prediction: generate)

    def classifier(self, model_name: str, task: Task, head: HeadSpec | None) -> nn.Module:
        """A classifier for `task` on the encoder `model_name`: stock head, or a pooled one."""
        if head is None:
            return load_classifier(model_name, task.labels, task.problem)
        return pooled_classifier(model_name, task.labels, head, task.problem)

    def encoder(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing, section: str = "finetune"
    ) -> Encoder:
        return Encoder(tokenizer, prep, section)

    def collator(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing
    ) -> DataCollatorWithPadding | ChunkCollator:
        """Dynamic padding (to a multiple of 8 on a GPU); every piece a row when hierarchical."""
        collate = ChunkCollator if prep.truncation == "hierarchical" else DataCollatorWithPadding
        return collate(tokenizer, pad_to_multiple_of=pad_multiple())

    def head_name(self, head: HeadSpec | None) -> str:
        """The manifest's name for the classifier: the stock head, or a pooled one."""
        return "stock" if head is None else "pooled"

    def score(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """[batch, num_labels]: class logits, or the one regression output."""
        return model(**batch).logits

    def head_config(self, task: Task, train: Any, label_scoring: str) -> dict[str, Any]:
        return {}

    def scorer(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, config: dict[str, Any]
    ) -> Scorer:
        """The score for `task`'s rows: the head's logits, whatever the task."""
        return self.score

    def training_set(
        self, dataset: Any, task: Task, tokenizer: PreTrainedTokenizerBase, config: dict
    ) -> Any:
        """What the Trainer trains on: the labelled rows as they are (class ids, floats)."""
        return dataset

    def save(self, model: nn.Module, model_dir: Path) -> None:
        """Weights in the standard files: save_pretrained, plus the head files of its kind."""
        model.save_pretrained(model_dir)

    def load(self, model_dir: Path, manifest: Manifest) -> nn.Module:
        if manifest.head == "stock":
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, **LOAD_KWARGS)
            first_token_only(model.base_model)
            return model
        if manifest.head == "pooled":
            return PooledClassifier.from_pretrained(model_dir, HeadSpec(**manifest.head_config))
        if manifest.head == "multitask":
            return MultiTaskModel.from_pretrained(model_dir)
        raise ValueError(
            f"{model_dir}: a bare encoder (head {manifest.head!r}, from the {manifest.stage} "
            "stage) has no classifier to score with; use models/finetune"
        )

    def objective_details(self, params: PretrainParams) -> dict[str, Any]:
        """The masking settings, for pretrain's plan line."""
        return {
            "mlm_probability": params.mlm_probability,
            "whole_word_masking": params.whole_word_mask,
        }

    def layer_stacks(self, config: Any) -> tuple[int, int] | None:
        """One stack of layers (training.optim counts them from num_hidden_layers)."""
        return None

    def multitask_model(self, model_dir: Path, tasks: list[Task]) -> MultiTaskModel:
        """One shared encoder and a fresh head per task (models.heads)."""
        return MultiTaskModel.build(str(model_dir), tasks)

    def task_part(self, model: MultiTaskModel, task: Task) -> nn.Module:
        """What a task's adapter goes around in the multitask model: its head on the encoder."""
        return model.heads[task.name]

    def save_multitask(
        self, model: MultiTaskModel, tasks: list[Task], configs: dict[str, dict], model_dir: Path
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """The encoder as a standard directory and each head's weights in multitask_heads/;
        returns the manifest's head and its `heads`."""
        model.encoder.save_pretrained(model_dir)
        return self.multitask_head, model.save_heads(model_dir, tasks)

    def serving_base(self, base_dir: Path) -> nn.Module:
        """The one base several tasks' adapters are served on: the bare encoder."""
        base = AutoModel.from_pretrained(base_dir, **LOAD_KWARGS)
        first_token_only(base)  # every task's head reads [CLS], as in load_trained's model
        return base

    def serving_part(self, base: nn.Module, base_dir: Path, task: Task) -> nn.Module:
        """What a served task's adapter goes around: its classifier built around the base."""
        return head_on(base, str(base_dir), task)

    def pipeline_loads(self, head: str) -> bool:
        """Whether `pipeline(pipeline_tag)` loads a full model with this head."""
        return head == "stock"

    def describe(self, head: str) -> str:
        """What a full model the stock pipeline does not load is, for the model card."""
        return (
            "an encoder with bertfit's pooled head (`bertfit_head.safetensors`), which the "
            "stock pipeline does not load"
        )


class Seq2SeqFamily:
    """Encoder-decoders as text-to-text classifiers: prefixed inputs, label words, ranking."""

    name = "seq2seq"
    task_type = TaskType.SEQ_2_SEQ_LM  # peft's: an adapter on a seq2seq LM
    auto_class = AutoModelForSeq2SeqLM  # a bare model keeps its LM head: it writes label words
    pipeline_tag = "text2text-generation"  # the model card's: how the model is called
    multitask_head = "text2text"  # no heads: the one model writes every task's label words
    objective = "span_corruption"  # further pretraining's (training.pretrain.OBJECTIVES)
    has_head = False  # no head to start from: multitask trained the model itself
    generates = True  # it can write its label as text (evaluate's prediction: generate)

    def classifier(self, model_name: str, task: Task, head: HeadSpec | None) -> nn.Module:
        """The seq2seq model itself: its LM head writes the label words."""
        if head is not None:
            raise ValueError(
                "params.yaml: finetune.feature and hierarchical truncation build encoder heads; "
                "a text-to-text model writes label words: use feature cls and head_tail, head "
                "or tail truncation"
            )
        return load_seq2seq(model_name)

    def encoder(
        self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing, section: str = "finetune"
    ) -> Text2TextEncoder:
        return Text2TextEncoder(tokenizer, prep, section)

    def collator(self, tokenizer: PreTrainedTokenizerBase, prep: Preprocessing) -> Seq2SeqCollator:
        """Dynamic padding of inputs, and of target ids with -100 (ignored by the loss)."""
        return Seq2SeqCollator(
            tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_multiple()
        )

    def head_name(self, head: HeadSpec | None) -> str:
        return "text2text"  # no head: the LM head writes the label words

    def head_config(self, task: Task, train: Any, label_scoring: str) -> dict[str, Any]:
        """How the model's label words are scored; regression: the value grid of the train set."""
        config: dict[str, Any] = {"label_scoring": label_scoring}
        if task.problem == "regression":
            config["values"] = regression_values(train["label"])
        return config

    def scorer(
        self, task: Task, tokenizer: PreTrainedTokenizerBase, config: dict[str, Any]
    ) -> Scorer:
        values = config.get("values")
        targets = label_targets(tokenizer, task, target_words(task, values))
        return LabelRanker(targets, values, config.get("label_scoring", "sum"))

    def training_set(
        self, dataset: Any, task: Task, tokenizer: PreTrainedTokenizerBase, config: dict
    ) -> Any:
        """The rows with `labels` replaced by their label word's token ids."""
        values = config.get("values")
        targets = label_targets(tokenizer, task, target_words(task, values))
        return with_targets(dataset, targets, values)

    def save(self, model: nn.Module, model_dir: Path) -> None:
        model.save_pretrained(model_dir)

    def load(self, model_dir: Path, manifest: Manifest) -> nn.Module:
        return load_seq2seq(str(model_dir))

    def objective_details(self, params: PretrainParams) -> dict[str, Any]:
        """The span-corruption settings, for pretrain's plan line."""
        return {
            "noise_density": params.noise_density,
            "mean_noise_span_length": params.mean_noise_span_length,
        }

    def layer_stacks(self, config: Any) -> tuple[int, int] | None:
        """(encoder, decoder) block counts, for layer-wise decay (training.optim)."""
        encoder = getattr(config, "num_layers", None) or getattr(config, "encoder_layers", None)
        decoder = getattr(config, "num_decoder_layers", None) or getattr(
            config, "decoder_layers", None
        )
        if not (isinstance(encoder, int) and isinstance(decoder, int)):
            raise ValueError(
                f"{type(config).__name__}: cannot read the encoder and decoder depths for "
                "layer-wise decay (num_layers / num_decoder_layers or encoder_layers / "
                "decoder_layers)"
            )
        return encoder, decoder

    def multitask_model(self, model_dir: Path, tasks: list[Task]) -> nn.Module:
        """The one model every task trains, text-to-text with its own prefix."""
        return load_seq2seq(str(model_dir))

    def task_part(self, model: nn.Module, task: Task) -> nn.Module:
        return model  # every task's adapter goes around the one model

    def save_multitask(
        self, model: nn.Module, tasks: list[Task], configs: dict[str, dict], model_dir: Path
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        """The model as a standard directory; the manifest's `heads` say how each task is
        scored."""
        model.save_pretrained(model_dir)
        return self.multitask_head, {
            t.name: {"task": t, "head_config": configs[t.name]} for t in tasks
        }

    def serving_base(self, base_dir: Path) -> nn.Module:
        return load_seq2seq(str(base_dir))

    def serving_part(self, base: nn.Module, base_dir: Path, task: Task) -> nn.Module:
        return base

    def pipeline_loads(self, head: str) -> bool:
        return False  # transformers 5 has no text2text pipeline

    def describe(self, head: str) -> str:
        return (
            "a text-to-text model that writes label words (transformers 5 has no text2text "
            "pipeline; bertfit ranks the label words)"
        )


def load_seq2seq(model_name: str) -> nn.Module:
    """The model with its LM head (AutoModelForSeq2SeqLM); a readable error for other kinds."""
    config = load_config(model_name)
    try:
        return AutoModelForSeq2SeqLM.from_pretrained(resolve_model_name(model_name), **LOAD_KWARGS)
    except ValueError as err:
        raise ValueError(
            f"model.name {model_name!r} ({config.model_type}): this architecture has no "
            f"seq2seq LM form ({str(err).splitlines()[0]}); the text-to-text family needs an "
            "AutoModelForSeq2SeqLM model such as T5, mT5 or BART"
        ) from err


Family = EncoderFamily | Seq2SeqFamily
FAMILIES: dict[str, Family] = {"encoder": EncoderFamily(), "seq2seq": Seq2SeqFamily()}


def family_of(config: PretrainedConfig, name: str = "the model") -> Family:
    """The family a model belongs to, from its config: encoder-decoders are seq2seq."""
    if getattr(config, "is_encoder_decoder", False):
        return FAMILIES["seq2seq"]
    return FAMILIES["encoder"]


def family_for(model_name: str) -> Family:
    return family_of(load_config(model_name), repr(model_name))


@dataclass
class Trained:
    """A model directory bertfit wrote, loaded: the model, its tokenizer, manifest and family."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    manifest: Manifest
    family: Family

    @property
    def task(self) -> Task:
        if self.manifest.task is None:
            raise ValueError(f"a {self.manifest.head} model classifies no single task")
        return self.manifest.task

    def encoder(self) -> Encoder:
        if self.manifest.preprocessing is None:
            raise ValueError(f"the {self.manifest.stage} model records no preprocessing")
        return self.family.encoder(self.tokenizer, self.manifest.preprocessing)

    def collator(self) -> Any:
        return self.family.collator(self.tokenizer, self.manifest.preprocessing)

    def scorer(self, task: Task | None = None) -> Scorer:
        """The family's score for the model's task (or one task of a multitask model)."""
        task = task or self.task
        config = self.manifest.head_config
        if self.manifest.heads and task.name in self.manifest.heads:
            config = self.manifest.heads[task.name].get("head_config", config)
        return self.family.scorer(task, self.tokenizer, config)


def family_in(manifest: Manifest, model_dir: Path) -> Family:
    if manifest.family not in FAMILIES:
        raise ValueError(
            f"{model_dir}: model family {manifest.family!r} is not known; known: {list(FAMILIES)}"
        )
    return FAMILIES[manifest.family]


def load_trained(model_dir: Path) -> Trained:
    """Any model directory bertfit wrote, rebuilt from its manifest (models.manifest).

    An adapter (method prompt_tuning or lora) loads onto its frozen base from `base/`; the
    multitask stage's prompts load as TaskAdapters on the one base (load_task_adapters).
    """
    manifest = read_manifest(model_dir)
    family = family_in(manifest, model_dir)
    method = method_in(manifest, model_dir)
    if method.adapter and manifest.stage == "multitask":
        served = load_task_adapters([model_dir])
        return Trained(served.model, served.tokenizer, manifest, family)
    model, tokenizer = method.load(family, Path(model_dir), manifest)
    return Trained(model, tokenizer, manifest, family)


@dataclass(frozen=True)
class AdapterEntry:
    """One task's adapter, where its base lies, and how its rows are encoded and scored."""

    task: Task
    adapter_dir: Path
    base_dir: Path
    manifest: Manifest
    head_config: dict[str, Any]


def adapter_entries(model_dir: Path) -> list[AdapterEntry]:
    """The adapters a directory holds: one (finetune's), or one per task (multitask prompts)."""
    manifest = read_manifest(model_dir)
    if not method_in(manifest, model_dir).adapter:
        raise ValueError(
            f"{model_dir}: a fully trained model (method {manifest.method}, from the "
            f"{manifest.stage} stage) has no adapter to switch to; load it alone with "
            "load_trained, or train with "
            "finetune.method prompt_tuning or lora"
        )
    if manifest.stage == "multitask":
        return [
            AdapterEntry(h["task"], model_dir / h["adapter"], model_dir, manifest, h["head_config"])
            for h in manifest.heads.values()
        ]
    if manifest.task is None:
        raise ValueError(f"{model_dir}: the adapter's manifest names no task")
    return [
        AdapterEntry(manifest.task, model_dir, model_dir / BASE_DIR, manifest, manifest.head_config)
    ]


@dataclass
class TaskServer:
    """Several tasks' adapters on one loaded base: each call switches to its task's adapter.

    `scores(task, texts)` gives the family's [rows, classes] scores, `predict` the labels (or,
    for regression, the values): the same encoding, batching and scoring as evaluate.
    """

    model: TaskAdapters
    tokenizer: PreTrainedTokenizerBase
    family: Family
    entries: dict[str, AdapterEntry]

    @property
    def tasks(self) -> list[str]:
        return list(self.entries)

    def scores(
        self,
        task: str,
        texts: list[str],
        text_pairs: list[str] | None = None,
        batch_size: int = 64,
        bf16: bool = False,
    ) -> np.ndarray:
        if task not in self.entries:
            raise KeyError(f"no adapter for task {task!r}; loaded: {self.tasks}")
        entry = self.entries[task]
        prep = entry.manifest.preprocessing
        rows = pd.DataFrame({"text": texts} | ({"text_pair": text_pairs} if text_pairs else {}))
        inputs = self.family.encoder(self.tokenizer, prep).inputs(rows, entry.task)
        score = self.family.scorer(entry.task, self.tokenizer, entry.head_config)
        collator = self.family.collator(self.tokenizer, prep)
        return predict_scores(self.model.adapter(task), inputs, batch_size, collator, score, bf16)

    def predict(
        self, task: str, texts: list[str], text_pairs: list[str] | None = None, **kw: Any
    ) -> list:
        scores = self.scores(task, texts, text_pairs, **kw)
        spec = self.entries[task].task
        if spec.problem == "regression":
            return scores[:, 0].tolist()
        return [spec.labels[i] for i in scores.argmax(-1)]


def load_task_adapters(model_dirs: list[Path]) -> TaskServer:
    """Adapters of several tasks (finetune's adapter directories, or a multitask prompt-tuning
    directory), all trained on one frozen base, served from that base loaded once.

    Every adapter's manifest names its base by fingerprint (models.adapters.base_fingerprint);
    adapters of different bases, or two for one task, are an error.
    """
    entries = [e for d in model_dirs for e in adapter_entries(Path(d))]
    if not entries:
        raise ValueError("load_task_adapters: no model directories given")
    names = [e.task.name for e in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two adapters for task(s) {repeated}: give one directory per task")
    bases = {e.manifest.base_fingerprint for e in entries}
    families = {e.manifest.family for e in entries}
    if len(bases) != 1 or None in bases or len(families) != 1:
        found = {str(e.adapter_dir): e.manifest.base_fingerprint for e in entries}
        raise ValueError(
            f"the adapters were not all trained on one base (base fingerprints: {found}); "
            "one loaded base serves only adapters trained on it"
        )
    family = family_in(entries[0].manifest, entries[0].base_dir)
    base_dir = entries[0].base_dir
    base = family.serving_base(base_dir)
    if base_fingerprint(base) != entries[0].manifest.base_fingerprint:
        raise ValueError(f"{base_dir}: the base's weights are not the ones its adapters name")
    adapted = {}
    with warnings.catch_warnings():
        # peft warns when a second LoRA adapter goes into the shared base: here that is the aim
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for entry in entries:
            around = family.serving_part(base, base_dir, entry.task)
            adapted[entry.task.name] = PeftModel.from_pretrained(
                around, entry.adapter_dir, adapter_name=entry.task.name, is_trainable=False
            )
    model = TaskAdapters(adapted).eval()
    return TaskServer(
        model, load_tokenizer(str(base_dir)), family, {e.task.name: e for e in entries}
    )
