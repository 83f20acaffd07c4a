"""The README's own commands, as written, in a fresh shell: `env -i` with a minimal PATH, no
activated virtual environment, on a copy of the project whose base model is the tiny BERT."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, read_jsonl_gz
from tests.test_stages import write_params

README = PROJECT_ROOT / "README.md"
MINIMAL_PATH = "/usr/bin:/bin"


def readme_command(prefix: str) -> str:
    """The first command line of README.md that starts with `prefix` (its comment cut off)."""
    for line in README.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith(prefix):
            return line.split("  #", 1)[0].strip()
    raise AssertionError(f"README.md shows no command starting with {prefix!r}")


def project_copy(target: Path) -> Path:
    """The project's files as a clone has them (git's tracked and new files), with the virtual
    environment the tests run in as its .venv, as `make install` leaves it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file() and not name.startswith(("reports/", "data/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(Path(sys.prefix))
    return target


def fresh_shell(command: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """`command` as a new user's shell runs it: nothing but a minimal PATH and HOME."""
    env = {"PATH": MINIMAL_PATH, "HOME": str(home)}
    return subprocess.run(
        ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_the_readmes_own_csv_recipe_and_a_variant_run_in_a_fresh_shell(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, shared_datasets: Path
) -> None:
    project = project_copy(tmp_path / "project")
    params = yaml.safe_load(
        write_params(tmp_path / "p.yaml", str(tiny_model_dir), trec_files, "trec").read_text()
    )
    params["tasks"] = "tasks.yaml"  # the project's catalogue, which add-task writes into
    params["target"] = "mr"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rows = read_jsonl_gz(shared_datasets / "sst2" / "train.jsonl.gz", 400)
    reviews = pd.DataFrame(
        {"review": [r["text"] for r in rows], "sentiment": [r["label"] for r in rows]}
    )
    home = tmp_path / "home"
    home.mkdir()
    for command in (
        "git init -q",
        "git config user.email readme@test && git config user.name 'readme test'",
        "git add -A && git commit -qm 'a clone'",
    ):
        assert fresh_shell(command, project, home).returncode == 0, command
    # step 1: the user's file in the project (neither in git nor in DVC yet)
    (project / "data_raw").mkdir()
    reviews.iloc[:300].to_csv(project / "data_raw" / "reviews.csv", index=False)
    reviews.iloc[300:, :1].to_csv(project / "new_reviews.csv", index=False)

    def run(command: str) -> str:
        done = fresh_shell(command, project, home)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    # step 2: register the file; the plan with its estimate
    out = run(readme_command(".venv/bin/bertfit add-task reviews data_raw/reviews.csv"))
    assert "estimated wall time on this machine: about " in out
    assert "next: make repro" in out
    assert (project / "data_raw" / "reviews.csv.dvc").is_file()
    # step 3's pipeline, as the README's variant command runs it (every stage, in the
    # workspace: the same stage commands `dvc repro` runs), then predict
    run("git add -A && git commit -qm 'reviews as the target'")
    variant = readme_command(".venv/bin/dvc exp run -S")
    assert re.fullmatch(r"\.venv/bin/dvc exp run( -S \S+)+", variant), variant
    out = run(variant)
    assert "python: not found" not in out and "No module named" not in out
    # step 3 is make repro: dvc repro, then the headline as the last line
    step3 = README.read_text(encoding="utf-8").split("3. **Train, then read the report**", 1)[1]
    assert step3.split("```sh", 1)[1].split("```", 1)[0].strip() == "make repro"
    metrics = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    shown = json.loads(run(".venv/bin/dvc exp show --json 2>/dev/null"))
    experiments = [e for entry in shown for e in (entry.get("experiments") or [])]
    assert experiments, "the variant is not among the experiments"
    run(readme_command(".venv/bin/bertfit predict new_reviews.csv"))
    predicted = pd.read_csv(project / "new_reviews.predictions.csv")
    assert len(predicted) == 100 and set(predicted["prediction"]) <= {"neg", "pos"}
