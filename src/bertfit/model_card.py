"""The model card finetune writes into its model directory: README.md in Hugging Face form.

YAML front matter in the Hub's format (huggingface_hub.ModelCardData: base model, pipeline tag,
library, datasets, language, and a `model-index` whose metric values are metrics.json's
validation values, exactly), then what a reader needs: intended use, how to call the model, the
training recipe that actually ran (each stage's entry in the manifest's `recipe`: further
pretraining on which corpus and for how many steps, or skipped; multitask on which tasks, or
skipped and why; finetune's steps, epochs, batch, learning rate, seed, input length, truncation,
selection), validation results and limitations (the label set, the target's unknown-token share
and how many of its texts are cut, from collect's stats.json in the task directory).

Written by hand on huggingface_hub's card classes rather than with Trainer.create_model_card:
that card knows only the last Trainer run (not pretrain or multitask), takes its metrics from
the last evaluation in the log (finetune keeps the selected one, often earlier), calls a local
base model "trained from scratch", leaves every prose section "More information needed", and
asks the Hub for the base model's license when not offline. Nothing here touches the network:
ModelCard.validate, load and push_to_hub are never called.
"""

from __future__ import annotations

import math
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bertfit.data.tasks import Task
from bertfit.models.family import FAMILIES
from bertfit.models.manifest import Manifest
from bertfit.models.methods import METHODS
from bertfit.reporting import markdown_table, md_code

README_FILE = "README.md"
PROJECT_URL = "https://arxiv.org/abs/1905.05583"
# metrics.json keys -> the Hub's metric ids (hf.co/metrics), where the names differ
HUB_METRICS = {
    "macro_f1": "f1",
    "mcc": "matthews_correlation",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
}
METRIC_PREFIX = "validation "  # the model-index metric name: "validation accuracy"
UNKNOWN_TOKEN_WARNING = 0.01  # collect.warn_unknown_token_share's default


def card_metrics(validation: dict[str, Any]) -> dict[str, float]:
    """The validation values the card reports: every finite metric, less standard errors."""
    return {
        k: v
        for k, v in validation.items()
        if isinstance(v, int | float) and math.isfinite(v) and not k.endswith("_se")
    }


def base_model(recipe: list[dict[str, Any]]) -> dict[str, Any]:
    """The model the run started from (the first stage's record of it)."""
    for entry in recipe:
        if "base_model" in entry:
            return entry["base_model"]
    return {"name": "unknown", "hub_id": None}


def card_data(
    manifest: Manifest,
    task: Task,
    stats: dict[str, Any],
    metrics: dict[str, Any],
    model_name: str,
) -> ModelCardData:
    """The front matter: what the Hub indexes, metric values exactly as in metrics.json."""
    base = base_model(manifest.recipe)
    source = stats.get("source", {})
    hub_dataset = source.get("path") if source.get("kind") == "hub" else None
    values = card_metrics(metrics["validation"])
    method = METHODS[manifest.method]
    results = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=hub_dataset or task.name,
            dataset_name=task.name,
            dataset_config=source.get("name") if hub_dataset else None,
            dataset_split="validation",
            metric_type=HUB_METRICS.get(key, key),
            metric_name=f"{METRIC_PREFIX}{key}",
            metric_value=value,
        )
        for key, value in values.items()
    ]
    return ModelCardData(
        model_name=model_name,
        # the base's licence binds the fine-tuned weights too (the data's terms are its source's)
        license=(base.get("license") or "").lower() or None,
        base_model=base.get("hub_id"),
        language=base.get("language"),
        library_name=method.library_name,
        pipeline_tag=FAMILIES[manifest.family].pipeline_tag,  # how the model is called
        datasets=[hub_dataset] if hub_dataset else None,
        metrics=sorted({HUB_METRICS.get(k, k) for k in values}),
        tags=["bertfit", "text-classification", task.name]
        + ([task.domain] if task.domain else [])
        + method.card_tags(),
        eval_results=results or None,
    )


def source_text(source: dict[str, Any]) -> str:
    """Where the task's rows came from, in a few words."""
    kind = source.get("kind")
    if kind == "hub":
        config = f" ({source['name']})" if source.get("name") else ""
        return f"the Hub dataset `{source['path']}`{config}"
    if kind == "package":
        return f"`{source.get('path')}` inside the PyPI package `{source.get('package')}`"
    if kind == "files":
        files = [source[s] for s in ("train", "validation", "test") if source.get(s)]
        return "local files " + ", ".join(md_code(f) for f in files)
    return "a source collect did not record"


def label_text(task: Task) -> str:
    if task.problem == "regression":
        return "a score (regression, one output)"
    return f"one of {len(task.labels)} labels: " + ", ".join(md_code(x) for x in task.labels)


def usage(manifest: Manifest) -> str:
    """How to call the model: the stock pipeline where it works, else bertfit's loader."""
    bertfit_way = (
        "```python\n"
        "import pandas as pd\n"
        "from bertfit.models.family import load_trained\n"
        "from bertfit.predict import predict_frame\n\n"
        'model = load_trained("models/finetune")\n'
        'predict_frame(model, pd.DataFrame({"text": ["a text to label"]}))\n'
        "```\n\n"
        "or, for a file: `bertfit predict texts.csv --text-column text`"
        + (
            " (a sentence-pair model: the second text in `text_pair`, `--pair-column`)."
            if manifest.task is not None and manifest.task.sentence_pair
            else "."
        )
    )
    family, method = FAMILIES[manifest.family], METHODS[manifest.method]
    if not method.adapter and family.pipeline_loads(manifest.head):
        return (
            "A standard sequence-classification directory (`id2label` set):\n\n"
            "```python\n"
            "from transformers import pipeline\n\n"
            'classify = pipeline("text-classification", model="models/finetune")\n'
            'classify("a text to label", truncation=True)\n'
            "```\n\n"
            "`truncation=True` is needed for texts longer than the model's input; the pipeline "
            "keeps their head, where training read them as the recipe below says. To read "
            "texts exactly as in training, use bertfit:\n\n" + bertfit_way
        )
    kind = method.describe(family, manifest.head)
    return f"This is {kind}. Load it with bertfit:\n\n{bertfit_way}"


def pretrain_step(entry: dict[str, Any]) -> str:
    if not entry.get("ran"):
        return f"**Further pretraining**: skipped ({entry.get('reason', 'not run')})."
    objective = "masked LM" if entry.get("objective") == "mlm" else "T5 span corruption"
    warmup = entry.get("head_warmup_steps") or 0
    head = f"{warmup:,} steps of the masked-LM head alone, then " if warmup else ""
    return (
        f"**Further pretraining** ({objective}) on the `{entry['corpus']}` corpus "
        f"({entry['train_blocks']:,} blocks of up to {entry['max_seq_length']} tokens): "
        f"{head}{entry['steps']:,} steps of batch {entry['batch_size']}, learning rate "
        f"{entry['learning_rate']:g}, seed {entry['seed']}; held-out loss "
        f"{entry['heldout_loss_before']:.4f} before, {entry['heldout_loss_after']:.4f} after."
    )


def multitask_step(entry: dict[str, Any]) -> str:
    if not entry.get("ran"):
        return f"**Multi-task fine-tuning**: skipped ({entry.get('reason', 'not run')})."
    sizes = ", ".join(f"{t} ({n:,} examples)" for t, n in entry["train_examples"].items())
    return (
        f"**Multi-task fine-tuning** (method {entry['method']}) on {sizes}: "
        f"{entry['steps']:,} steps of batch {entry['batch_size']}, {entry['sampling']} "
        f"sampling, learning rate {entry['learning_rate']:g}, seed {entry['seed']}; kept step "
        f"{entry['best_step']} (mean validation {entry['validation_mean_main']:.4f})."
    )


def finetune_step(entry: dict[str, Any], metrics: dict[str, Any]) -> str:
    truncation = entry["truncation"]
    if truncation == "head_tail":
        head = entry["head_tokens"]
        truncation = f"head+tail ({head} head tokens, the rest from the tail)"
    start = (
        "its multitask head"
        if metrics.get("head_from_multitask")
        else "its multitask prompt"
        if metrics.get("prompt_from_multitask")
        else "a fresh head"
    )
    if not FAMILIES[entry["family"]].has_head:
        start = "the model's own label words (no head)"
    kept = (
        f"kept step {metrics['best_step']} (epoch {metrics['best_epoch']:g})"
        + (
            f", the latest within {metrics['selection_margin']:.4f} of the best "
            f"(step {metrics['peak_step']})"
            if metrics["peak_step"] != metrics["best_step"]
            else ", the best"
        )
        + (", stopped early" if metrics.get("stopped_early") else "")
    )
    if entry["optimizer"] == "adafactor" and entry["adafactor_relative_step"]:
        rate = "Adafactor with its relative step size"
    else:
        rate = (
            f"{'AdamW' if entry['optimizer'] == 'adamw' else 'Adafactor'} at learning rate "
            f"{entry['learning_rate']:g}, {entry['lr_scheduler_type']} schedule, warm-up "
            + (
                f"{entry['warmup_steps']} steps"
                if entry["warmup_steps"] is not None
                else f"{entry['warmup_ratio']:g} of the steps"
            )
        )
    return (
        f"**Fine-tuning** on {entry['task']} ({metrics['train_examples']:,} train examples, "
        f"method {entry['method']}): {metrics['train_steps']:,} steps "
        f"({metrics['train_epochs']:g} of {metrics['planned_epochs']:g} planned epochs) of batch "
        f"{entry['batch_size']}, {rate}, layer-wise decay {entry['layer_decay']:g}, seed "
        f"{entry['seed']}; inputs of {entry['max_seq_length']} tokens, truncation "
        f"{truncation}; started from {start}. Selected on validation "
        f"{metrics['selected_on']}: {kept}." + calibration_text(metrics.get("calibration"))
    )


def calibration_text(calibration: dict[str, Any] | None) -> str:
    """The temperature the probabilities are divided by, and what it did on validation."""
    if not calibration:
        return ""
    return (
        f" Probabilities are temperature-scaled (T = {calibration['temperature']:.3f}, fitted "
        f"on validation; expected calibration error there {calibration['ece_uncalibrated']:.4f} "
        f"→ {calibration['ece']:.4f}, 10 bins): `bertfit predict` applies it; a plain "
        f"`pipeline()` shows the raw softmax."
    )


def limitations(
    task: Task, stats: dict[str, Any], metrics: dict[str, Any], base: dict[str, Any]
) -> list[str]:
    """The label set, what the tokenizer cannot read, what was cut, the language, and what
    the validation scores are (collect's stats of the target; finetune's metrics)."""
    lines = [f"It answers {label_text(task)}, whatever the text; anything else is out of scope."]
    if task.labels and stats.get("train", {}).get("label_counts"):
        counts = stats["train"]["label_counts"]
        lines.append(
            "Train label counts: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + "."
        )
    share = stats.get("unknown_token_share")
    if share is not None:
        read = (
            " The tokenizer cannot read much of this text: use a base model whose vocabulary "
            "covers its language."
            if share > UNKNOWN_TOKEN_WARNING
            else ""
        )
        lines.append(
            f"{100 * share:.2f} % of the target's tokens are the tokenizer's unknown token "
            f"(collect's count over all its splits).{read}"
        )
    truncated = metrics.get("train_share_truncated")
    if truncated is not None:
        lines.append(
            f"{100 * truncated:.1f} % of the train texts are longer than the "
            f"{metrics['max_seq_length']}-token input and were cut; a prediction reads no "
            "more of a text than that."
        )
    language = base.get("language")
    if language:
        languages = language if isinstance(language, str) else ", ".join(language)
        lines.append(f"Language: {languages} (the base model's card); other languages untested.")
    lines.append(
        "The metrics above are validation scores of the kept step, which selection looked "
        "at; the test split's scores are in the evaluate stage's reports/evaluate/metrics.json. "
        "One seed; differences of a few tenths of a point between runs are seed noise."
    )
    return lines


def model_card(manifest: Manifest, task: Task, metrics: dict[str, Any]) -> str:
    """README.md for a finetune model directory: front matter and text. `metrics`: the stage's
    record as metrics.json and run.json hold it (reporting.json_values); the manifest's last
    recipe entry is finetune's own."""
    model_name = f"bertfit-{task.name}"
    stats = task.stats()
    data = card_data(manifest, task, stats, metrics, model_name)
    base = base_model(manifest.recipe)
    source = stats.get("source", {})
    base_name = base.get("hub_id") or f"`{base.get('name')}`"
    if base.get("license"):  # the base's terms; the data's are its source's
        base_name += f" (license {base['license']}, from its card)"
    if base.get("from_scratch"):
        base_name = f"a model built from scratch (`{base.get('name')}`)"
    rows = stats.get("train", {}).get("rows")
    steps = []
    for entry in manifest.recipe:
        if entry["stage"] == "pretrain":
            steps.append(pretrain_step(entry))
        elif entry["stage"] == "multitask":
            steps.append(multitask_step(entry))
        elif entry["stage"] == "finetune":
            steps.append(finetune_step(entry, metrics))
    values = card_metrics(metrics["validation"])
    errors = {
        k.removesuffix("_se"): v for k, v in metrics["validation"].items() if k.endswith("_se")
    }
    if errors:  # selection_tolerance auto: the selected metric's bootstrap standard error
        table = markdown_table(
            ["metric", "validation", "standard error"],
            [[k, v, errors.get(k, "")] for k, v in values.items()],
        )
    else:
        table = markdown_table(["metric", "validation"], [[k, v] for k, v in values.items()])
    body = "\n".join(
        [
            f"# {model_name}",
            "",
            f"A text classifier for **{task.name}**"
            + (f" ({task.domain})" if task.domain else "")
            + f": it gives {label_text(task)}. Fine-tuned from {base_name} by bertfit, a DVC "
            f"pipeline following Sun et al. (2019), [How to Fine-Tune BERT for Text "
            f"Classification?]({PROJECT_URL}).",
            "",
            "## Intended use",
            "",
            f"Classifying texts like those of {task.name} ({source_text(source)}"
            + (f"; {rows:,} train texts" if rows else "")
            + "). Texts of another kind, domain or language than the train set are outside "
            "what it was trained and checked on: score some of yours (evaluate, or bertfit "
            "predict on labelled rows) before relying on it.",
            "",
            "## How to use",
            "",
            usage(manifest),
            "",
            "## Training recipe",
            "",
            "The stages of this run, in order:",
            "",
            *[f"{i}. {step}" for i, step in enumerate(steps, 1)],
            "",
            "## Validation results",
            "",
            table,
            "",
            "## Limitations",
            "",
            *[f"- {line}" for line in limitations(task, stats, metrics, base)],
            "",
        ]
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
