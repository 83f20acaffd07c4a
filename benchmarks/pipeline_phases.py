"""Where the embedded default's time goes: each stage of dvc.yaml, per phase, per precision.

Runs the pipeline's own stage commands (read from dvc.yaml, in its order) in a scratch folder,
`.bench/pipeline/<precision>/` (data, models, reports and checkpoints go there; the project's
outputs are not touched), with every stage's `mixed_precision` set to the precision asked for:
`no` is fp32 everywhere, what a CPU without AVX512-BF16 runs; `auto` is bf16 autocast where the
CPU or GPU has bf16 arithmetic (on a machine without it, `auto` runs fp32 too and is skipped).
BERTFIT_TIMINGS_DIR makes each stage write its phases (bertfit.phases: tokenising, held-out
scoring, training steps, validation passes, checkpoints, saving); the script adds each
process's wall time, so start-up and imports show as the difference.

    python benchmarks/pipeline_phases.py                 # fp32, and bf16 where the machine has it
    python benchmarks/pipeline_phases.py --precision no
    python benchmarks/pipeline_phases.py --precision no --name before \
        --set pretrain.max_steps=100 --set finetune.num_train_epochs=2   # another default

`--set section.key=value` (YAML values, as `dvc exp run -S`) times a variant of the default;
`--name` then names its report and scratch folder (pipeline_<name>_<precision>.json).

`--from-timings DIR` summarises the files a `dvc repro` wrote with BERTFIT_TIMINGS_DIR=DIR
instead of running the stages (`--precision` then says what that run used).

Prints a table per precision and writes reports/benchmarks/pipeline_<precision>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import timing
import yaml

from bertfit.hardware import bf16_available
from bertfit.params import read_params_file
from bertfit.phases import TIMINGS_DIR_ENV
from bertfit.reporting import write_json

ROOT = Path(__file__).resolve().parents[1]
# what a stage command writes, relative to the project: redirected into the scratch folder
OUTPUT_ROOTS = ("data", "models", "reports", "checkpoints")
PRECISION_SECTIONS = ("pretrain", "multitask", "finetune", "evaluate")


def stage_commands(dvc_yaml: Path) -> dict[str, list[str]]:
    """Each stage's command from dvc.yaml, split into arguments, in an order DVC may run them:
    a stage after every stage whose outputs it depends on, else in the file's order (the
    summary stage is listed first but runs last)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]

    def outputs(stage: dict) -> list[str]:
        entries = [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries]

    def needs(stage: dict, other: dict) -> bool:
        return any(
            dep == out or dep.startswith(f"{out}/") or out.startswith(f"{dep}/")
            for dep in stage.get("deps", [])
            for out in outputs(other)
        )

    ordered: list[str] = []
    while len(ordered) < len(stages):
        ready = [
            name
            for name, stage in stages.items()
            if name not in ordered
            and all(o in ordered for o in stages if o != name and needs(stage, stages[o]))
        ]
        if not ready:
            raise SystemExit(f"{dvc_yaml}: the stages' deps and outs form a cycle")
        ordered.append(ready[0])
    return {name: shlex.split(stages[name]["cmd"]) for name in ordered}


def redirected(command: list[str], scratch: Path, params: Path) -> list[str]:
    """The command with its outputs under `scratch`, its params file `params`, this python."""
    out = []
    for arg in command:
        if arg == "params.yaml":
            arg = str(params)
        elif arg in OUTPUT_ROOTS or arg.startswith(tuple(f"{r}/" for r in OUTPUT_ROOTS)):
            arg = str(scratch / arg)
        out.append(arg)
    if out[0] == "python":
        out[0] = sys.executable
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Set each `section.key=value` of `overrides` in the params `data` (the value read as YAML,
    as `dvc exp run -S` does)."""
    for override in overrides:
        dotted, sep, value = override.partition("=")
        *sections, key = dotted.split(".")
        node = data
        for name in sections:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if not sep or not isinstance(node, dict) or key not in node:
            raise SystemExit(f"--set {override!r}: expected section.key=value of params.yaml")
        node[key] = yaml.safe_load(value)


def precision_params(
    source: Path, precision: str, target: Path, overrides: list[str] | None = None
) -> None:
    """The project's params with every stage's mixed_precision set to `precision`, then each
    `section.key=value` of `overrides` (the value read as YAML). The catalogue is written
    inline: `tasks: tasks.yaml` would be looked for next to `target`."""
    data = read_params_file(source)
    for section in PRECISION_SECTIONS:
        data[section]["mixed_precision"] = precision
    apply_overrides(data, overrides or [])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False))


def run_stages(
    precision: str, scratch: Path, overrides: list[str]
) -> tuple[dict[str, float], Path]:
    """Run every stage in order; each one's wall seconds, and where its phases were written."""
    if scratch.exists():
        subprocess.run(["rm", "-rf", str(scratch)], check=True)
    params = scratch / "params.yaml"
    precision_params(ROOT / "params.yaml", precision, params, overrides)
    timings = scratch / "timings"
    env = os.environ | {TIMINGS_DIR_ENV: str(timings), "HF_HUB_OFFLINE": "1"}
    walls = {}
    for name, command in stage_commands(ROOT / "dvc.yaml").items():
        print(f"[{precision}] {name} ...", flush=True)
        start = time.perf_counter()
        subprocess.run(redirected(command, scratch, params), cwd=ROOT, env=env, check=True)
        walls[name] = time.perf_counter() - start
        print(f"[{precision}] {name}: {walls[name]:.1f} s", flush=True)
    return walls, timings


def summary(
    walls: dict[str, float] | None, timings: Path, precision: str, overrides: list[str]
) -> dict[str, Any]:
    """Per stage: wall seconds (when run here), the stage's own total and its phases."""
    stages: dict[str, Any] = {}
    names = list(walls or stage_commands(ROOT / "dvc.yaml"))
    names = [n for n in names if walls or (timings / f"{n}.json").is_file()]
    for name in names:
        path = timings / f"{name}.json"
        row = json.loads(path.read_text()) if path.is_file() else {}
        entry = {"phases_s": row.get("phases_s", {}), "stage_s": row.get("total_s")}
        if walls:
            entry["wall_s"] = round(walls[name], 3)
        stages[name] = entry
    total = sum(s.get("wall_s") or s["stage_s"] or 0.0 for s in stages.values())
    return {
        "precision": precision,
        "bf16": precision == "auto" and bf16_available(),
        "machine": timing.machine(),
        "total_s": round(total, 1),
        "overrides": overrides,
        "stages": stages,
    }


def print_summary(result: dict[str, Any]) -> None:
    print(
        f"\nprecision {result['precision']} (bf16 {result['bf16']}); "
        f"{result['machine']}; stages {result['total_s']:.0f} s"
        + (
            f"; dvc repro {result['dvc_repro_wall_s']:.0f} s"
            if "dvc_repro_wall_s" in result
            else ""
        )
    )
    print(f"{'stage':<10} {'wall s':>8} {'stage s':>8}  phases (s)")
    for name, s in result["stages"].items():
        by_time = sorted(s["phases_s"].items(), key=lambda kv: -kv[1])
        phases = ", ".join(f"{k} {v:.1f}" for k, v in by_time)
        wall = f"{s['wall_s']:8.1f}" if "wall_s" in s else f"{'-':>8}"
        stage = f"{s['stage_s']:8.1f}" if s["stage_s"] is not None else f"{'-':>8}"
        print(f"{name:<10} {wall} {stage}  {phases}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", choices=["no", "auto"], default=None)
    parser.add_argument("--from-timings", type=Path, default=None)
    parser.add_argument(
        "--wall-s",
        type=float,
        default=None,
        help="with --from-timings: the "
        "measured wall seconds of that dvc repro, recorded beside the stages",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports/benchmarks")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--name", default=None, help="names the report of a --set variant")
    args = parser.parse_args(argv)
    precisions = args.precision or (["no", "auto"] if bf16_available() else ["no"])
    if args.from_timings is not None:
        if len(precisions) != 1:
            parser.error("--from-timings summarises one run: give one --precision")
        result = summary(None, args.from_timings, precisions[0], [])
        if args.wall_s is not None:  # the whole `dvc repro`, start-up and DVC's own work in
            result["dvc_repro_wall_s"] = args.wall_s
        print_summary(result)
        write_json(args.out_dir / f"pipeline_{precisions[0]}.json", result)
        return
    for precision in precisions:
        if precision == "auto" and not bf16_available():
            print("precision auto runs fp32 on this machine (no bf16 arithmetic): skipped")
            continue
        name = f"{args.name}_{precision}" if args.name else precision
        walls, timings = run_stages(precision, ROOT / ".bench/pipeline" / name, args.set)
        result = summary(walls, timings, precision, args.set)
        result["metrics"] = json.loads(
            (ROOT / ".bench/pipeline" / name / "reports/evaluate/metrics.json").read_text()
        )
        print_summary(result)
        write_json(args.out_dir / f"pipeline_{name}.json", result)


if __name__ == "__main__":
    main()
