"""bertfit add-task and bertfit plan on a project of their own: a real SST-2 sample as the user's
CSV, the tiny BERT as the base model."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bertfit import add_task, cli, plan
from bertfit.params import parse_section, read_params_file
from bertfit.training.budget import training_length
from bertfit.training.finetune import finetune_arguments
from tests.conftest import read_jsonl_gz
from tests.test_stages import write_params

CATALOGUE_HEAD = """# the project's task catalogue
# (a comment that must survive)

trec:  # real TREC questions
  domain: question
  source: {kind: files, train: train.jsonl, validation: validation.jsonl,
           test: test.jsonl}
"""


@pytest.fixture()
def project(tmp_path: Path, tiny_model_dir: Path, trec_files: dict, shared_datasets: Path) -> Path:
    """params.yaml naming tasks.yaml (one task, trec) and data_raw/reviews.csv: 300 real SST-2
    sentences in columns `review` and `sentiment`."""
    params_file = write_params(tmp_path / "params.yaml", str(tiny_model_dir), trec_files, "trec")
    params = yaml.safe_load(params_file.read_text())
    params["tasks"] = "tasks.yaml"
    params_file.write_text("# the project's params\n" + yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "tasks.yaml").write_text(CATALOGUE_HEAD)
    rows = read_jsonl_gz(shared_datasets / "sst2" / "train.jsonl.gz", 300)
    frame = pd.DataFrame(
        {"review": [r["text"] for r in rows], "sentiment": [r["label"] for r in rows]}
    )
    (tmp_path / "data_raw").mkdir()
    frame.to_csv(tmp_path / "data_raw" / "reviews.csv", index=False)
    return tmp_path


def arguments(project: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_task.add_arguments(parser)
    return parser.parse_args(
        [
            "reviews",
            str(project / "data_raw" / "reviews.csv"),
            "--text-column",
            "review",
            "--label-column",
            "sentiment",
            "--params",
            str(project / "params.yaml"),
            "--no-dvc",
            "--no-measure",
            *extra,
        ]
    )


def test_add_task_registers_the_file_and_prints_the_plan(project: Path) -> None:
    params_before = (project / "params.yaml").read_text()
    out = add_task.add_task(arguments(project))

    catalogue = (project / "tasks.yaml").read_text()
    assert catalogue.startswith(CATALOGUE_HEAD)  # the user's text, comments and layout, kept
    entry = yaml.safe_load(catalogue)["reviews"]
    assert entry["source"] == {
        "kind": "files",
        "train": "data_raw/reviews.csv",
        "validation": None,
        "test": None,
        "text_column": "review",
        "label_column": "sentiment",
    }
    assert entry["split"] == {"validation_ratio": 0.1, "test_ratio": 0.1}
    params_after = (project / "params.yaml").read_text()
    assert params_after == params_before.replace("target: trec", "target: reviews")
    assert read_params_file(project / "params.yaml")["target"] == "reviews"

    # the file, its columns and the labels
    assert "reviews.csv: 300 rows, 2 columns" in out
    train = pd.read_csv(project / "data_raw" / "reviews.csv")
    assert "2 labels (train rows): neg " in out
    # finetune's line is what training.budget decides for the train rows collect will keep
    lines = [line.strip() for line in out.splitlines()]
    (finetune_line,) = [line for line in lines if line.startswith("finetune ")]
    params = parse_section(read_params_file(project / "params.yaml"), "finetune")
    train_rows = int(finetune_line.split()[1].replace(",", ""))
    assert 0.75 * len(train) < train_rows <= 0.8 * len(train) + 1
    length = training_length(params, finetune_arguments(params, project / "w"), train_rows)
    assert f"batch {length.batch_size}, {length.epochs:g} epochs" in finetune_line
    assert f"= {length.steps} steps" in finetune_line
    assert "multitask  passes the model through: multitask.enabled is false" in out
    assert "estimated wall time: not measured" in out
    assert out.rstrip().splitlines()[-2] == "next: make repro"


def test_a_small_test_split_and_a_rare_class_are_warned(project: Path) -> None:
    out = add_task.add_task(arguments(project))
    test_rows = 30  # 10 % of 300
    assert (
        f"reviews's test split has {test_rows} rows: a 95 % interval on its accuracy is up to "
        f"±{100 * 1.96 * math.sqrt(0.25 / test_rows):.1f} points"
    ) in out
    assert "fewer than 10 train examples" not in out

    csv = project / "data_raw" / "reviews.csv"
    frame = pd.read_csv(csv)
    mixed = pd.DataFrame({"review": frame["review"][:5] + " (or not)", "sentiment": "mixed"})
    pd.concat([frame, mixed]).to_csv(csv, index=False)  # 5 rows of "mixed": 4 left in train
    out = add_task.add_task(arguments(project, "--replace"))
    assert "classes with fewer than 10 train examples: {'mixed': " in out


def test_a_wrong_column_is_one_message_and_nothing_is_written(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {f: (project / f).read_text() for f in ("params.yaml", "tasks.yaml")}
    argv = ["add-task", "reviews", str(project / "data_raw" / "reviews.csv")]
    argv += ["--text-column", "body", "--params", str(project / "params.yaml"), "--no-dvc"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("bertfit add-task: error: ")
    assert "no column --text-column 'body', --label-column 'label'" in err
    assert "the file's columns are ['review', 'sentiment']" in err
    assert "--text-column review --label-column sentiment" in err
    assert {f: (project / f).read_text() for f in before} == before


def test_what_collect_refuses_is_refused_with_collects_message(project: Path) -> None:
    before = (project / "tasks.yaml").read_text()
    test_file = project / "data_raw" / "test.csv"
    pd.DataFrame({"review": ["a new kind of text"], "sentiment": ["sarcastic"]}).to_csv(
        test_file, index=False
    )
    args = arguments(project, "--test", str(test_file))
    with pytest.raises(ValueError, match=r"tasks\.reviews \[test\]: labels \['sarcastic'\] do not"):
        add_task.add_task(args)
    assert (project / "tasks.yaml").read_text() == before


def test_a_name_taken_needs_replace(project: Path) -> None:
    add_task.add_task(arguments(project))
    with pytest.raises(ValueError, match="a task named 'reviews' is already in the catalogue"):
        add_task.add_task(arguments(project))
    add_task.add_task(arguments(project, "--replace", "--validation-ratio", "0.2"))
    catalogue = yaml.safe_load((project / "tasks.yaml").read_text())
    assert catalogue["reviews"]["split"]["validation_ratio"] == 0.2
    assert list(catalogue) == ["trec", "reviews"]
    with pytest.raises(ValueError, match="must be a lowercase identifier"):
        add_task.add_task(argparse.Namespace(**vars(arguments(project)) | {"name": "My Task"}))


def test_plan_measures_this_machine_and_adds_up_the_stages(project: Path) -> None:
    add_task.add_task(arguments(project))
    made = plan.make_plan(project / "params.yaml")
    assert made.costs is not None and made.costs.train_token > 0 and made.costs.mlm_step > 0
    seconds = [s.seconds for s in made.stages]
    assert [s.name for s in made.stages] == [
        "collect",
        "pretrain",
        "multitask",
        "finetune",
        "evaluate",
    ]
    assert all(s is not None and s > 0 for s in seconds)
    assert made.seconds == pytest.approx(sum(seconds))
    # finetune's share follows its steps: doubling the epochs' floor adds training time
    text = made.text()
    assert "estimated wall time on this machine: about " in text
    assert "finetune step " in text and "masked-LM step 8 x 32 " in text
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"]["num_train_epochs"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    # the same measured costs: a second measurement on a busy machine could come out faster
    longer = plan.make_plan(project / "params.yaml", costs=made.costs)
    assert longer.stages[3].seconds > made.stages[3].seconds


def test_ablate_estimates_its_experiments_from_one_measurement(project: Path) -> None:
    from bertfit.ablate import plan as ablation

    add_task.add_task(arguments(project))
    planned = ablation.plan(["FiT", "ITPT-FiT"], [1, 2], ["finetune.seed"], [], [], None, {}, "t")
    line = ablation.estimate_line(planned, project / "params.yaml")
    assert line.startswith("estimated wall time on this machine: about ")
    assert "for 4 experiments, one at a time (2 run collect, pretrain and multitask;" in line
    assert "masked-LM step" in line  # measured although params.yaml's own corpus may be none


def test_plan_warns_of_a_warm_up_as_long_as_the_run(project: Path) -> None:
    add_task.add_task(arguments(project))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"] |= {"warmup_ratio": None, "warmup_steps": 100000}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    made = plan.make_plan(project / "params.yaml", measure=False)
    finetune = next(s for s in made.stages if s.name == "finetune").summary
    assert any(
        w.startswith("finetune.warmup_steps 100000 is as long as the run (")
        and "the learning rate never reaches finetune.learning_rate" in w
        for w in made.warnings
    ), (made.warnings, finetune)
