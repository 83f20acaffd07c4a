"""A throwaway DVC project for `bertfit ablate`: one stage that writes evaluate's and finetune's
metrics from a table of test errors keyed by the params the ablation sets, so the queue
mechanics run for real in seconds and every number in the table is known beforehand.

    python tests/ablate_project.py DIR   # build it (then run bertfit ablate --repo DIR ...)

tests/data/ablate_exp_show.json is `dvc exp show --json` of this project after
`bertfit ablate --repo DIR --variants FiT ITPT-FiT MFiT-FiT --seeds 3
--curve-variants FiT ITPT-FiT --train-samples 100 all` (dvc 3.67.1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# "<pretrain.corpus>|<multitask.enabled>|<finetune.max_train_samples>|<finetune.seed>" -> test
# error; a missing key fails the stage (MFiT-FiT's seed 44), as a crashed experiment would
ERRORS = {
    "none|False|None|42": 0.20,
    "none|False|None|43": 0.22,
    "none|False|None|44": 0.21,
    "within_task|False|None|42": 0.18,
    "within_task|False|None|43": 0.19,
    "within_task|False|None|44": 0.17,
    "none|True|None|42": 0.19,
    "none|True|None|43": 0.20,
    "none|False|100|42": 0.40,
    "none|False|100|43": 0.42,
    "none|False|100|44": 0.41,
    "within_task|False|100|42": 0.30,
    "within_task|False|100|43": 0.33,
    "within_task|False|100|44": 0.36,
}
TRAIN_ROWS = 1000  # finetune's train_examples when max_train_samples is null

PARAMS = """\
target: mr
pretrain:
  corpus: within_task
  seed: 42
multitask:
  enabled: true
  seed: 42
finetune:
  seed: 42
  max_train_samples: null
"""

STAGE = f"""\
import json, sys
from pathlib import Path
import yaml
p = yaml.safe_load(open("params.yaml"))
samples = p["finetune"]["max_train_samples"]
key = "|".join(str(v) for v in (p["pretrain"]["corpus"], p["multitask"]["enabled"], samples,
                                p["finetune"]["seed"]))
errors = json.load(open("errors.json"))
if key not in errors:
    sys.exit(f"no test error listed for {{key}}")
if errors[key] == "hang":  # a run whose queue worker a test kills while it runs
    import time
    time.sleep(600)
for stage in ("evaluate", "finetune"):
    Path(f"reports/{{stage}}").mkdir(parents=True, exist_ok=True)
json.dump({{"error_rate": errors[key], "accuracy": 1 - errors[key], "task": p["target"]}},
          open("reports/evaluate/metrics.json", "w"))
json.dump({{"train_examples": samples or {TRAIN_ROWS}}}, open("reports/finetune/metrics.json", "w"))
"""

DVC_YAML = """\
stages:
  evaluate:
    cmd: python stage.py
    deps: [stage.py, errors.json]
    params: [target, pretrain, multitask, finetune]
    metrics:
      - reports/finetune/metrics.json:
          cache: false
      - reports/evaluate/metrics.json:
          cache: false
"""


def build(repo_dir: Path) -> Path:
    """A git + DVC project in repo_dir with its baseline committed (`dvc repro` run once)."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    (repo_dir / "params.yaml").write_text(PARAMS)
    (repo_dir / "stage.py").write_text(STAGE)
    (repo_dir / "dvc.yaml").write_text(DVC_YAML)
    errors = ERRORS | {"within_task|True|None|42": 0.15}  # the baseline's own run
    (repo_dir / "errors.json").write_text(json.dumps(errors, indent=2) + "\n")

    def run(*command: str) -> None:
        subprocess.run(command, cwd=repo_dir, check=True, capture_output=True, text=True)

    run("git", "init", "-q")
    run("git", "config", "user.email", "ablate@test")
    run("git", "config", "user.name", "ablate test")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    run(sys.executable, "-m", "dvc", "repro", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    return repo_dir


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
