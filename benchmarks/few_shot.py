"""A few labelled rows per class: bertfit's default against SetFit, frozen embeddings and HF.

The case (issue 36): a user has N labelled rows per class. Every system below sees the same N per
class (drawn from the dataset's train split, stratified, with the cell's seed) and nothing else:
bertfit's validation split is those same rows (no extra labelled set), and the test split is
scored as is (ag_news and imdb: their first 2,000 rows, a random sample, since the files are
shuffled; the full 7,600 news items or 25,000 reviews at 256 tokens would take most of the
benchmark's time on 2 CPU cores). `mr`, the embedded default's
target, is read from the pipeline's data/tasks/mr (after `dvc repro` or `dvc pull`), so that
`--base models/pretrain` (the pipeline's within-task pretrained model) measures ITPT before the
few-label method on its own target.

Systems, all on the embedded base (all-MiniLM-L6-v2, a mean-pooling sentence-transformer):
- `bertfit`: training.finetune.finetune with the project's params.yaml finetune section and
  model.max_seq_length (FiT: no further pretraining, no multitask), scored through load_trained
  and predict_frame as evaluate does. At these sizes its few-labels switch picks `contrastive`.
- `bertfit_full`: the same with `few_labels_method: null`: the paper's recipe under the small-data
  rule (training.budget), i.e. the default before the switch.
- `setfit`: setfit 1.2.0 with its own defaults (batch 16, 1 epoch, the model's 256 tokens, a
  logistic-regression head; its default sampling draws every unique pair, oversampling the
  rarer kind: 144 pairs from 16 rows, about 8,000 from 128), `report_to="none"`.
- `frozen_lr`: the base's sentence embeddings (no tuning) and scikit-learn's LogisticRegression.
- `hf`: run_classification's defaults (benchmarks/small_data.py's `hf`: 3 epochs, batch 8, 5e-5).

Each cell writes reports/benchmarks/few_shot/<dataset>_<n>_<system>_s<seed>.json (accuracy,
macro F1, wall time) at once, and a cell whose file exists is skipped, so a partial table is
real and a run can be continued. The summary (mean ± std over the seeds found) is printed and
written beside the cells' folder (reports/benchmarks/few_shot.json), then bertfit against SetFit
and frozen + LR paired by seed (reports/benchmarks/few_shot_paired.json). Wall times are on
whatever else the machine runs.

    python benchmarks/few_shot.py                                # everything: hours on 2 cores
    python benchmarks/few_shot.py --datasets sst2 trec --sizes 8 16 --seeds 0 1 2
    python benchmarks/few_shot.py --datasets imdb --sizes 50 --seeds 0 --systems bertfit
    python benchmarks/few_shot.py --summary-only
    python benchmarks/few_shot.py --datasets mr --sizes 8 --systems bertfit \
        --base models/pretrain --out-dir reports/benchmarks/few_shot_variants/itpt
    python benchmarks/few_shot.py --systems bertfit --set finetune.contrastive_max_pairs=null \
        --out-dir reports/benchmarks/few_shot_variants/pairs_all   # a variant, kept apart
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import logging
import os
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import timing
import torch
import yaml

from bertfit.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "reports" / "benchmarks" / "few_shot"
SYSTEMS = ("bertfit", "bertfit_full", "setfit", "frozen_lr", "hf")
TEST_ROWS = {"ag_news": 2000, "imdb": 2000}  # the others: the whole test split
OVERRIDES: dict[str, Any] = {}  # finetune.<key>=<value> from --set, for the bertfit systems
BASE: dict[str, str] = {}  # --base: the bertfit systems' starting model instead of params.yaml's


@cache
def read_split(dataset: str, split: str) -> pd.DataFrame:
    if dataset == "mr":  # the embedded default's target, as the pipeline's collect stage wrote it
        frame = pd.read_parquet(ROOT / "data" / "tasks" / "mr" / f"{split}.parquet")
        return frame[["text", "label"]]
    with gzip.open(DATASETS / dataset / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
        frame = pd.DataFrame([json.loads(line) for line in f])
    limit = TEST_ROWS.get(dataset) if split == "test" else None
    return frame if limit is None else frame.head(limit)


def few_rows(dataset: str, per_class: int, seed: int) -> pd.DataFrame:
    """`per_class` train rows of every class, drawn with `seed`, in a seeded order."""
    train = read_split(dataset, "train")
    drawn = train.groupby("label", group_keys=False).sample(n=per_class, random_state=seed)
    return drawn.sample(frac=1.0, random_state=seed).reset_index(drop=True)[["text", "label"]]


def project_params() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def model_path() -> str:
    from bertfit.models.loading import resolve_model_name

    return resolve_model_name(project_params()["model"]["name"])


def bertfit_base() -> str:
    return BASE.get("path") or model_path()


def scores(gold: list[str], predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro")),
    }


# --- the systems: each takes the train rows and the test split, returns its predictions -------


def run_bertfit(train: pd.DataFrame, test: pd.DataFrame, seed: int, switch: bool) -> dict:
    from bertfit.data.tasks import Task
    from bertfit.models.family import load_trained
    from bertfit.params import FinetuneParams
    from bertfit.predict import predict_frame
    from bertfit.training.finetune import finetune

    params = project_params()
    section = copy.deepcopy(params["finetune"]) | OVERRIDES | {"seed": seed}
    if not switch:
        section["few_labels_method"] = None
    task = Task("target", sorted(train["label"].unique()))
    with tempfile.TemporaryDirectory() as tmp:
        metrics = finetune(
            bertfit_base(),
            task,
            train,
            train,  # validation: the same rows, no extra labels
            FinetuneParams(**section),
            params["model"]["max_seq_length"],
            Path(tmp) / "model",
            Path(tmp) / "reports",
        )
        trained = load_trained(Path(tmp) / "model")
        predicted = predict_frame(trained, test[["text"]], batch_size=128)["prediction"]
    return {
        "predicted": list(predicted),
        "method": metrics["method"],
        "train_steps": metrics["train_steps"],
    }


def run_setfit(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(model_path())
    with tempfile.TemporaryDirectory() as tmp:  # its checkpoints, else ./checkpoints
        args = TrainingArguments(
            output_dir=tmp, seed=seed, report_to="none", show_progress_bar=False
        )
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_pandas(train))
        trainer.train()
    return {"predicted": [str(y) for y in model.predict(list(test["text"]))]}


@cache
def frozen_encoder() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path(), device="cpu")


@cache
def frozen_test_embeddings(dataset: str) -> np.ndarray:
    return frozen_encoder().encode(list(read_split(dataset, "test")["text"]), batch_size=64)


def run_frozen_lr(train: pd.DataFrame, dataset: str, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    features = frozen_encoder().encode(list(train["text"]), batch_size=64)
    head = LogisticRegression(max_iter=1000, random_state=seed).fit(features, train["label"])
    return {"predicted": list(head.predict(frozen_test_embeddings(dataset)))}


def run_hf(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    from small_data import run_hf as small_data_hf

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, frame in (("train", train), ("test", test)):
            frame[["text", "label"]].to_json(folder / f"{name}.jsonl", orient="records", lines=True)
        result = small_data_hf(folder, seed, 5e-5)
    return {k: result[k] for k in ("accuracy", "macro_f1", "train_steps")}


def run_cell(dataset: str, per_class: int, system: str, seed: int) -> dict[str, Any]:
    train = few_rows(dataset, per_class, seed)
    test = read_split(dataset, "test")
    started = time.perf_counter()
    if system in ("bertfit", "bertfit_full"):
        out = run_bertfit(train, test, seed, switch=system == "bertfit")
    elif system == "setfit":
        out = run_setfit(train, test, seed)
    elif system == "frozen_lr":
        out = run_frozen_lr(train, dataset, seed)
    else:
        out = run_hf(train, test, seed)
    wall = time.perf_counter() - started
    predicted = out.pop("predicted", None)
    if predicted is not None:
        out |= scores(list(test["label"]), predicted)
    return out | {
        "dataset": dataset,
        "per_class": per_class,
        "train_rows": len(train),
        "test_rows": len(test),
        "system": system,
        "seed": seed,
        "wall_s": round(wall, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),  # what else shared the cores
        "threads": torch.get_num_threads(),
        "machine": timing.machine(),
    }


# --- the table ----------------------------------------------------------------------------------


def read_cells(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(out_dir.glob("*.json"))]


def summary(runs_found: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[str, list[dict]] = {}
    for run in runs_found:
        cells.setdefault(f"{run['dataset']}_{run['per_class']}_{run['system']}", []).append(run)
    table = {}
    for key, runs in sorted(cells.items()):
        acc = np.array([r["accuracy"] for r in runs])
        table[key] = {
            "dataset": runs[0]["dataset"],
            "per_class": runs[0]["per_class"],
            "system": runs[0]["system"],
            "seeds": sorted(r["seed"] for r in runs),
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
            "wall_s_mean": float(np.mean([r["wall_s"] for r in runs])),
        }
    return table


def print_summary(table: dict[str, Any]) -> None:
    print("| dataset | per class | system | seeds | accuracy | wall s |")
    print("|---|---|---|---|---|---|")
    for row in table.values():
        std = f" ± {row['accuracy_std']:.3f}" if row["accuracy_std"] is not None else ""
        print(
            f"| {row['dataset']} | {row['per_class']} | {row['system']} | "
            f"{','.join(map(str, row['seeds']))} | {row['accuracy_mean']:.3f}{std} | "
            f"{row['wall_s_mean']:.0f} |"
        )


def paired(
    runs_found: list[dict[str, Any]], against: tuple[str, ...] = ("setfit", "frozen_lr")
) -> list[dict]:
    """bertfit against each system in `against`, cell by cell: the same seed draws the same rows
    for every system, so the differences are paired (mean and std over the seeds both ran)."""
    accuracy: dict[tuple, dict[int, float]] = {}
    for run in runs_found:
        key = (run["dataset"], run["per_class"], run["system"])
        accuracy.setdefault(key, {})[run["seed"]] = run["accuracy"]
    rows = []
    for dataset, per_class in sorted({(d, n) for d, n, _ in accuracy}, key=lambda k: (k[1], k[0])):
        ours = accuracy.get((dataset, per_class, "bertfit"), {})
        for other in against:
            theirs = accuracy.get((dataset, per_class, other), {})
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            diff = np.array([ours[s] - theirs[s] for s in seeds])
            rows.append(
                {
                    "dataset": dataset,
                    "per_class": per_class,
                    "against": other,
                    "seeds": seeds,
                    "difference_mean": float(diff.mean()),
                    "difference_std": float(diff.std(ddof=1)) if len(diff) > 1 else None,
                    "seeds_at_or_above": int((diff >= 0).sum()),
                }
            )
    return rows


def print_paired(rows: list[dict]) -> None:
    print("| dataset | per class | bertfit − | seeds | difference, points | seeds bertfit ≥ |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        std = row["difference_std"]
        spread = f" ± {100 * std:.1f}" if std is not None else ""
        print(
            f"| {row['dataset']} | {row['per_class']} | {row['against']} | "
            f"{','.join(map(str, row['seeds']))} | {100 * row['difference_mean']:+.1f}{spread} | "
            f"{row['seeds_at_or_above']}/{len(row['seeds'])} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "ag_news"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="finetune.KEY=VALUE",
        help="a variant of the bertfit systems' finetune params (YAML values); use --out-dir",
    )
    parser.add_argument(
        "--base",
        help="the bertfit systems' starting model (e.g. models/pretrain, the pipeline's ITPT "
        "model); the others keep the embedded base; use --out-dir",
    )
    args = parser.parse_args(argv)
    if args.base:
        BASE["path"] = str(Path(args.base).resolve())
    for item in args.set:
        key, _, value = item.partition("=")
        OVERRIDES[key.removeprefix("finetune.")] = yaml.safe_load(value)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.summary_only:
        for seed in args.seeds:
            for per_class in args.sizes:
                for dataset in args.datasets:
                    for system in args.systems:
                        path = args.out_dir / f"{dataset}_{per_class}_{system}_s{seed}.json"
                        if path.is_file():
                            continue
                        result = run_cell(dataset, per_class, system, seed)
                        write_json(path, result)
                        print(
                            f"{dataset} {per_class}/class {system} seed {seed}: accuracy "
                            f"{result['accuracy']:.3f} in {result['wall_s']:.0f} s",
                            flush=True,
                        )
    runs_found = read_cells(args.out_dir)
    table = summary(runs_found)
    write_json(args.out_dir.with_suffix(".json"), table)
    print_summary(table)
    rows = paired(runs_found)
    write_json(args.out_dir.parent / f"{args.out_dir.name}_paired.json", rows)
    print()
    print_paired(rows)


if __name__ == "__main__":
    main()
