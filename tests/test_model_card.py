"""finetune's model card (bertfit.model_card): the Hub's front matter and the recipe that ran."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml
from huggingface_hub import ModelCard

from bertfit import cli
from bertfit.models.family import load_trained
from tests.conftest import TINY_FINETUNE
from tests.test_stages import Chain, write_params


def front_matter(card: str) -> dict:
    """The YAML between the card's first two `---` lines."""
    head, _, _ = card.removeprefix("---\n").partition("\n---\n")
    return yaml.safe_load(head)


def test_model_card_front_matter_equals_metrics_and_recipe_names_the_steps(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        pretrain={"max_steps": 4, "save_steps": 2},
        multitask={"enabled": True, "tasks": ["trec"], "max_steps": 6, "eval_steps": 3},
        finetune={"num_train_epochs": 1},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.through_finetune()

    card = (c.model / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    ft = json.loads((c.ft_reports / "run.json").read_text())
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification"
    assert "base_model" not in meta  # a local directory: no Hub id to name
    (index,) = meta["model-index"]
    (result,) = index["results"]
    assert result["task"]["type"] == "text-classification"
    assert (result["dataset"]["name"], result["dataset"]["split"]) == ("trec", "validation")
    values = {m["name"].removeprefix("validation "): m["value"] for m in result["metrics"]}
    expected = {
        k: v
        for k, v in ft["validation"].items()
        if v is not None and math.isfinite(v) and not k.endswith("_se")
    }
    assert values == expected  # the exact floats of metrics.json
    assert {"accuracy", "macro_f1", "mcc", "loss"} <= set(values)
    hub = ModelCard(card).data  # the Hub's own parser reads the same values back
    assert {r.metric_name: r.metric_value for r in hub.eval_results} == {
        f"validation {k}": v for k, v in expected.items()
    }

    pt = json.loads((c.pt_reports / "run.json").read_text())
    mt = json.loads((c.mt_reports / "run.json").read_text())
    stats = json.loads(c.stats.read_text())["trec"]
    recipe = recipe_section(card)
    assert "1. **Further pretraining** (masked LM) on the `within_task` corpus" in recipe
    assert f"{pt['steps']} steps of batch 8" in recipe
    rows = stats["train"]["rows"]
    assert f"2. **Multi-task fine-tuning** (method full) on trec ({rows} examples)" in recipe
    assert "6 steps of batch 16, proportional sampling" in recipe
    assert f"kept step {mt['best_step']}" in recipe
    assert f"3. **Fine-tuning** on trec ({ft['train_examples']} train examples" in recipe
    assert f"{ft['train_steps']} steps (1 of 1 planned epochs) of batch 16" in recipe
    assert f"seed {TINY_FINETUNE['seed']}; inputs of 32 tokens, truncation head+tail" in recipe
    assert "started from its multitask head" in recipe and ft["head_from_multitask"]
    limitations = card.partition("## Limitations")[2]
    assert f"{100 * stats['unknown_token_share']:.2f} % of the target's tokens" in limitations
    labels = json.loads((c.data / "tasks" / "trec" / "labels.json").read_text())["labels"]
    intro = card.partition("## Intended use")[0]
    assert all(f"`{label}`" in intro for label in labels)  # the label set, named

    # the card changes nothing for the loaders: bertfit's and `bertfit predict`
    trained = load_trained(c.model)
    assert trained.task.name == "trec"
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["What city is the capital of France ?"]}).to_csv(texts, index=False)
    cli.main(["predict", str(c.model), str(texts)])
    predicted = pd.read_csv(tmp_path / "texts.predictions.csv")
    assert predicted["prediction"].iloc[0] in trained.task.labels


def test_skipped_stages_are_named_with_their_reasons(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict
) -> None:
    """FiT: pretrain and multitask pass the model through; the card says so and why."""
    params_file = write_params(
        tmp_path / "params.yaml",
        str(tiny_model_dir),
        trec_files,
        "trec",
        pretrain={"corpus": "none"},
        finetune={"num_train_epochs": 1},
    )
    c = Chain(tmp_path, params_file, tmp_path)
    c.through_finetune()
    card = (c.model / "README.md").read_text(encoding="utf-8")
    recipe = recipe_section(card)
    assert "1. **Further pretraining**: skipped (pretrain.corpus is none)." in recipe
    assert "2. **Multi-task fine-tuning**: skipped (multitask.enabled is false)." in recipe
    assert "3. **Fine-tuning** on trec" in recipe and "started from a fresh head" in recipe
    manifest = json.loads((c.model / "bertfit_model.json").read_text())
    assert [(e["stage"], e["ran"]) for e in manifest["recipe"]] == [
        ("pretrain", False),
        ("multitask", False),
        ("finetune", True),
    ]
    assert manifest["recipe"][0]["base_model"]["name"] == str(tiny_model_dir)


def recipe_section(card: str) -> str:
    return card.partition("## Training recipe")[2].partition("## Validation results")[0]
