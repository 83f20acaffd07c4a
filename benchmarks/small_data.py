"""bertfit's default fine-tune against the plain Hugging Face one, on small and long-text data.

The case this answers (issue 16): a user brings a few hundred or thousand labelled rows of their
own, runs bertfit's default FiT (`pretrain.corpus: none`, `multitask.enabled: false`, everything
else as params.yaml has it) and compares it with what they would otherwise run: the Hugging
Face `run_classification` example on the same model with its defaults. Both see the same rows.

Proxies, drawn once from ../shared/datasets (stratified by label, seed 0; written to
.bench/small_data/data/<proxy>/):

| proxy | train | validation | test |
|---|---|---|---|
| imdb_1400 | 1,400 of imdb train (long reviews) | 200 of imdb validation | 1,000 of imdb test |
| sst2_500 | 500 of sst2 train | 200 of sst2 validation | all 1,821 of sst2 test |
| sst2_2000 | 2,000 of sst2 train | 200 of sst2 validation | all 1,821 |
| trec_500 | 500 of trec train | 200 of trec validation | all 500 of trec test |

Systems, each trained once per seed:
- `hf`: run_classification's defaults: AutoModelForSequenceClassification on the model, texts
  truncated to 128 tokens (head only), 3 epochs, batch 8, learning rate 5e-5 (TrainingArguments'
  default), linear decay without warm-up, AdamW, the last epoch scored on test. Batches are padded
  to their longest text (the example's `--pad_to_max_length False`) rather than to 128: padding is
  masked, so it changes no prediction, only the time, which this script cannot spare.
  `--hf-learning-rate 2e-5` gives the run the issue was filed with.
- `bertfit`: the pipeline's own stage commands (dvc.yaml: inputs, collect, pretrain, multitask,
  finetune, evaluate) in .bench/small_data/<proxy>_<seed>/ with the project's params.yaml, except
  the catalogue (the proxy as a `files` task, the target), `pretrain.corpus: none`,
  `multitask.enabled: false` and `finetune.seed`.

Each run writes reports/benchmarks/small_data/<proxy>_<system>_s<seed>.json (test metrics,
optimisation steps, wall time); a run whose file exists is skipped, so a long measurement can be
continued later. The summary (mean ± std over the seeds found, per proxy and system) is printed
and written to reports/benchmarks/small_data.json.

    python benchmarks/small_data.py                    # every proxy, both systems, seeds 0 1 2
    python benchmarks/small_data.py --proxies sst2_500 --systems hf --seeds 0
    python benchmarks/small_data.py --systems bertfit --seeds 0 --set finetune.min_train_steps=400 \
        --out-dir .bench/variants/steps400   # a variant, kept apart from the defaults' results
    python benchmarks/small_data.py --summary-only
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timing
import yaml
from pipeline_phases import apply_overrides, redirected, stage_commands
from sklearn.model_selection import train_test_split

from bertfit.hardware import use_bf16
from bertfit.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
BENCH = ROOT / ".bench" / "small_data"
SYSTEMS = ("hf", "bertfit")


@dataclass(frozen=True)
class Proxy:
    dataset: str
    train: int
    validation: int
    test: int | None  # None: the whole test split


PROXIES = {
    "imdb_1400": Proxy("imdb", 1400, 200, 1000),
    "sst2_500": Proxy("sst2", 500, 200, None),
    "sst2_2000": Proxy("sst2", 2000, 200, None),
    "trec_500": Proxy("trec", 500, 200, None),
}


def read_split(dataset: str, split: str) -> pd.DataFrame:
    with gzip.open(DATASETS / dataset / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        return pd.DataFrame([json.loads(line) for line in f])


def stratified(frame: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """n rows with the split's label shares (seed 0); all of them when n is None."""
    if n is None or n >= len(frame):
        return frame.reset_index(drop=True)
    sample, _ = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=0)
    return sample.reset_index(drop=True)


def write_proxy(name: str) -> Path:
    """The proxy's three splits as JSONL files (written once); returns their folder."""
    folder = BENCH / "data" / name
    if (folder / "test.jsonl").is_file():
        return folder
    proxy = PROXIES[name]
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": proxy.train, "validation": proxy.validation, "test": proxy.test}
    for split, n in sizes.items():
        rows = stratified(read_split(proxy.dataset, split), n)
        rows[["text", "label"]].to_json(folder / f"{split}.jsonl", orient="records", lines=True)
    return folder


def split(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_json(folder / f"{name}.jsonl", lines=True, dtype={"label": str})


def model_name() -> str:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["model"]["name"]


# --- the Hugging Face run ---------------------------------------------------------------------


def run_hf(folder: Path, seed: int, learning_rate: float) -> dict[str, Any]:
    """run_classification's defaults on the proxy; test accuracy of the last epoch."""
    import torch
    from datasets import Dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from bertfit.models.loading import resolve_model_name

    start = time.perf_counter()
    set_seed(seed)
    path = resolve_model_name(model_name())
    train, test = split(folder, "train"), split(folder, "test")
    labels = sorted(train["label"].unique())
    label2id = {y: i for i, y in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )

    def encoded(frame: pd.DataFrame) -> Dataset:
        enc = tokenizer(list(frame["text"]), truncation=True, max_length=128)
        return Dataset.from_dict(dict(enc) | {"label": [label2id[y] for y in frame["label"]]})

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=3,
            per_device_train_batch_size=8,
            per_device_eval_batch_size=8,
            learning_rate=learning_rate,
            seed=seed,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=encoded(train),
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        output = trainer.train()
        with torch.inference_mode():
            logits = trainer.predict(encoded(test)).predictions
    predicted = logits.argmax(-1)
    gold = np.array([label2id[y] for y in test["label"]])
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro")),
        "train_steps": int(output.global_step),
        "train_s": round(output.metrics["train_runtime"], 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "max_seq_length": 128,
        "learning_rate": learning_rate,
        "precision": "fp32",  # TrainingArguments' default
        "machine": timing.machine(),
    }


# --- the bertfit run --------------------------------------------------------------------------


def proxy_params(name: str, folder: Path, seed: int, target: Path, overrides: list[str]) -> None:
    """The project's params.yaml with the proxy as the only task, FiT, the seed, then `--set`."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    source = {"kind": "files"} | {s: str(folder / f"{s}.jsonl") for s in ("train", "validation")}
    source["test"] = str(folder / "test.jsonl")
    data["tasks"] = {name: {"domain": name, "source": source}}
    data["target"] = name
    data["pretrain"]["corpus"] = "none"
    data["multitask"]["enabled"] = False
    data["multitask"]["tasks"] = [name]
    data["finetune"]["seed"] = seed
    apply_overrides(data, overrides)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False))


def run_bertfit(name: str, folder: Path, seed: int, overrides: list[str]) -> dict[str, Any]:
    """The pipeline's stage commands on the proxy; evaluate's test metrics."""
    scratch = BENCH / f"{name}_s{seed}"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    params = scratch / "params.yaml"
    proxy_params(name, folder, seed, params, overrides)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    for stage, command in stage_commands(ROOT / "dvc.yaml").items():
        print(f"  bertfit {stage} ...", flush=True)
        subprocess.run(redirected(command, scratch, params), cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - start
    test = json.loads((scratch / "reports/evaluate/metrics.json").read_text())
    fit = json.loads((scratch / "reports/finetune/run.json").read_text())  # the whole record
    run = json.loads((scratch / "reports/finetune/run.json").read_text())
    live = scratch / "reports/finetune/live/plots/metrics/finetune"  # DVCLive's curves
    curve = pd.read_csv(live / "validation/accuracy.tsv", sep="\t")
    chosen = yaml.safe_load(params.read_text())["finetune"]["mixed_precision"]
    return {
        "accuracy": test["accuracy"],
        "macro_f1": test["macro_f1"],
        "train_steps": fit["train_steps"],
        "epochs": fit["train_epochs"],
        "best_step": fit["best_step"],
        "peak_step": fit["peak_step"],
        "selection_margin": round(fit["selection_margin"], 4),
        "validation": [[int(r.step), round(r.accuracy, 4)] for r in curve.itertuples()],
        "train_s": round(run["train_runtime_s"], 1),
        "wall_s": round(wall, 1),
        "max_seq_length": fit["max_seq_length"],
        "learning_rate": fit["learning_rate"],
        "precision": "bf16" if use_bf16(chosen) else "fp32",
        "machine": timing.machine(),
    }


# --- summary ----------------------------------------------------------------------------------


def run_file(out_dir: Path, proxy: str, system: str, seed: int) -> Path:
    return out_dir / "small_data" / f"{proxy}_{system}_s{seed}.json"


def summary(out_dir: Path) -> dict[str, Any]:
    """Mean ± std (sample, n-1) of test accuracy and the mean steps and time, per proxy/system."""
    table: dict[str, Any] = {}
    machines: list[dict[str, Any]] = []  # where the runs ran, each once
    for proxy in PROXIES:
        for system in SYSTEMS:
            runs = sorted((out_dir / "small_data").glob(f"{proxy}_{system}_s*.json"))
            rows = [json.loads(p.read_text()) for p in runs]
            if not rows:
                continue
            acc = np.array([r["accuracy"] for r in rows])
            table.setdefault(proxy, {})[system] = {
                "n": len(rows),
                "seeds": [int(p.stem.rsplit("_s", 1)[1]) for p in runs],
                "accuracy_mean": round(float(acc.mean()), 4),
                "accuracy_std": round(float(acc.std(ddof=1)), 4) if len(rows) > 1 else None,
                "train_steps": round(float(np.mean([r["train_steps"] for r in rows])), 1),
                "max_seq_length": rows[0]["max_seq_length"],
                "wall_s": round(float(np.mean([r["wall_s"] for r in rows])), 1),
                "precision": sorted({r["precision"] for r in rows}),
            }
            for row in rows:
                if row["machine"] not in machines:
                    machines.append(row["machine"])
        both = table.get(proxy, {})
        if "hf" in both and "bertfit" in both:
            both["difference_points"] = round(
                100 * (both["bertfit"]["accuracy_mean"] - both["hf"]["accuracy_mean"]), 2
            )
    return {"machines": machines, "proxies": table}


def print_summary(result: dict[str, Any]) -> None:
    for machine in result["machines"]:
        print(f"\n{machine}")
    print("| proxy | system | test accuracy (mean ± std, n) | steps | tokens | wall s |")
    print("|---|---|---|---|---|---|")
    for proxy, systems in result["proxies"].items():
        for system in SYSTEMS:
            s = systems.get(system)
            if s is None:
                continue
            std = f" ± {100 * s['accuracy_std']:.2f}" if s["accuracy_std"] is not None else ""
            print(
                f"| {proxy} | {system} | {100 * s['accuracy_mean']:.2f}{std} (n={s['n']}) "
                f"| {s['train_steps']:.0f} | {s['max_seq_length']} | {s['wall_s']:.0f} |"
            )
        if "difference_points" in systems:
            print(f"| {proxy} | bertfit - hf | {systems['difference_points']:+.2f} points | | | |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", nargs="+", choices=list(PROXIES), default=list(PROXIES))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--hf-learning-rate", type=float, default=5e-5)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a bertfit variant (params.yaml value, as dvc exp run -S); use with --out-dir",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports/benchmarks")
    parser.add_argument("--rerun", action="store_true", help="run again where a result exists")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.summary_only:
        for seed in args.seeds:
            for proxy in args.proxies:
                folder = write_proxy(proxy)
                for system in args.systems:
                    path = run_file(args.out_dir, proxy, system, seed)
                    if path.is_file() and not args.rerun:
                        continue
                    print(f"{proxy} {system} seed {seed} ...", flush=True)
                    if system == "hf":
                        result = run_hf(folder, seed, args.hf_learning_rate)
                    else:
                        result = run_bertfit(proxy, folder, seed, args.set)
                    print(f"{proxy} {system} seed {seed}: {result}", flush=True)
                    write_json(path, result)
    result = summary(args.out_dir)
    print_summary(result)
    write_json(args.out_dir / "small_data.json", result)


if __name__ == "__main__":
    sys.exit(main())
