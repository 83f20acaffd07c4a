"""Both model families built from scratch on the target, through all five stages, same budget.

Offline nothing pretrained of the text-to-text family exists, so the two families are compared
on equal terms: each model is built by collect from a config in configs/ (`--size small`: T5
4+4 blocks, d 256, 9.4 M parameters, and BERT 8 blocks, hidden 256, 8.6 M; `--size mini`: T5
2+2 blocks, d 128, and BERT 4 blocks, hidden 128) with a tokenizer of the same size trained on
the same text (sentencepiece unigram for T5, WordPiece for BERT), then runs the same pretrain
steps (span corruption / masked LM on the same corpus), multitask steps, finetune epochs,
batch sizes and max_seq_length. Each family keeps the optimiser its recipe uses from scratch
(T5: Adafactor at a fixed --seq2seq-lr, or in its relative-step mode; BERT: AdamW at
--encoder-lr). These are not pretrained-model numbers: they show the pipeline working for both
families, not what t5-small would reach.

    .venv/bin/python benchmarks/families_from_scratch.py --size mini --pretrain-steps 300 \
        --multitask-steps 200 --epochs 6 --encoder-lr 1e-3 --seq2seq-relative-step

Prints a table (wall time per stage, test accuracy, generate validity for T5) and writes it to
reports/benchmarks/families_from_scratch.json. `--target chnsenti` reads Chinese, offline: each
tokenizer is trained on the collected Chinese text (the embedded MiniLM maps most of it to [UNK]).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bertfit.params import read_params_file  # noqa: E402
from stages import collect, evaluate, finetune, multitask, pretrain  # noqa: E402

STAGES = {
    "collect": collect,
    "pretrain": pretrain,
    "multitask": multitask,
    "finetune": finetune,
    "evaluate": evaluate,
}
SIZES = {
    "small": {
        "seq2seq": "configs/t5-small-scratch.json",
        "encoder": "configs/bert-small-scratch.json",
    },
    "mini": {
        "seq2seq": "configs/t5-mini-scratch.json",
        "encoder": "configs/bert-mini-scratch.json",
    },
}


def stage_argv(work: Path, params_file: Path) -> dict[str, list[str]]:
    """Each stage's dvc.yaml options, every path re-rooted under `work`."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    argv = {}
    for name, stage in stages.items():
        words = shlex.split(stage["cmd"])[2:]
        pairs = zip(words[::2], words[1::2], strict=True)
        argv[name] = [
            x
            for option, value in pairs
            for x in (option, str(params_file) if option == "--params" else str(work / value))
        ]
    argv["collect"] += ["--root", str(ROOT)]
    return argv


def family_params(base: dict[str, Any], family: str, args: argparse.Namespace) -> dict[str, Any]:
    params = json.loads(json.dumps(base))
    config = SIZES[args.size][family]
    params["model"] = {"name": f"scratch:{config}", "max_seq_length": args.max_seq_length}
    if family == "seq2seq":
        optimiser = {
            "optimizer": "adafactor",
            "adafactor_relative_step": args.seq2seq_relative_step,
            "learning_rate": args.seq2seq_lr,
            "layer_decay": 1.0,
        }
    else:
        optimiser = {"optimizer": "adamw", "learning_rate": args.encoder_lr, "layer_decay": 1.0}
    params["pretrain"] |= optimiser | {
        "max_steps": args.pretrain_steps,
        "max_seq_length": args.max_seq_length,
        "save_steps": args.pretrain_steps,
    }
    params["multitask"] |= optimiser | {
        "enabled": args.multitask_steps > 0,
        "max_steps": max(args.multitask_steps, 1),
        "eval_steps": max(args.multitask_steps, 1),
    }
    params["finetune"] |= optimiser | {
        "num_train_epochs": args.epochs,
        "init_head_from_multitask": family == "encoder",
    }
    params["evaluate"] |= {"prediction": "generate"}
    return params


def run_family(family: str, args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    work = args.work / family
    work.mkdir(parents=True, exist_ok=True)
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(family_params(base, family, args)), encoding="utf-8")
    argv = stage_argv(work, params_file)
    seconds = {}
    for name, module in STAGES.items():
        start = time.perf_counter()
        module.main(argv[name])
        seconds[name] = round(time.perf_counter() - start, 1)
    reports = {
        name: json.loads((work / "reports" / name / "metrics.json").read_text())
        for name in ("pretrain", "evaluate")
    }
    pt, ev = reports["pretrain"], reports["evaluate"]
    return {
        "family": family,
        "config": SIZES[args.size][family],
        "seconds": seconds,
        "total_s": round(sum(seconds.values()), 1),
        "heldout_loss": [pt["heldout_before"]["loss"], pt["heldout_after"]["loss"]],
        "test_accuracy": ev["accuracy"],
        "generate_valid_share": ev.get("generate_valid_share"),
        "generate_accuracy": ev.get("generate_accuracy"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "families_from_scratch")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--multitask-steps", type=int, default=0, help="0: multitask off")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--encoder-lr", type=float, default=5e-4, help="AdamW")
    parser.add_argument("--seq2seq-lr", type=float, default=1e-3, help="Adafactor, fixed rate")
    parser.add_argument(
        "--seq2seq-relative-step",
        action="store_true",
        help="Adafactor's own step size (relative step, warm-up init) instead of the fixed rate",
    )
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--target", default=None, help="a catalogue task; default: params' target")
    parser.add_argument("--families", nargs="+", default=["seq2seq", "encoder"])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "reports/benchmarks/families_from_scratch.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    base = read_params_file(args.params)  # the catalogue inline, as the work dirs lack tasks.yaml
    base["target"] = args.target or base["target"]
    rows = [run_family(f, args, base) for f in args.families]
    header = f"{'family':8} {'total s':>8} {'stages s':40} {'held-out loss':>16} {'test acc':>8}"
    print(header)
    for r in rows:
        stages = "/".join(f"{s:g}" for s in r["seconds"].values())
        loss = "{:.2f} -> {:.2f}".format(*r["heldout_loss"])
        valid = r["generate_valid_share"]
        print(
            f"{r['family']:8} {r['total_s']:8.1f} {stages:40} {loss:>16} "
            f"{r['test_accuracy']:8.4f}" + (f"  generate valid {valid:.3f}" if valid else "")
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    budget = {k: v for k, v in vars(args).items() if k not in ("params", "work", "out")}
    budget["target"] = base["target"]
    args.out.write_text(json.dumps({"budget": budget, "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
