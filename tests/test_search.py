from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml

from bertfit import search
from bertfit.params import FullSpace, Range, parse_section
from bertfit.search import space as spaces
from bertfit.search import study as studies
from bertfit.search import trials as trials_module
from bertfit.search.trials import TrialsFailing
from tests.conftest import TINY_FINETUNE
from tests.test_stages import ready_for_finetune

SRC = Path(__file__).resolve().parents[1] / "src"

FULL = {
    "learning_rate": {"low": 1.0e-4, "high": 3.0e-3, "log": True},
    "num_train_epochs": {"low": 1, "high": 2},
    "per_device_train_batch_size": [16, 32],
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "layer_decay": {"low": 0.8, "high": 1.0},
}
SPACE = {
    "n_trials": 3,
    "seed": 0,
    "max_train_samples": 80,
    "pruner": "none",
    "max_failures_in_a_row": 3,
    "spaces": {"full": FULL},
    "family_spaces": {},
}


def test_search_runs_trials_on_validation_and_writes_the_best_override(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_files: dict,
) -> None:
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, search=SPACE)
    (c.data / "tasks" / "trec" / "test.parquet").unlink()  # the search must never read test
    out = tmp_path / "search"
    search.main(["--params", c.params[1], "--space", c.params[1], "--data-dir", str(c.data),
                 "--base-model-dir", str(c.multitasked), "--out", str(out)])  # fmt: skip

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all()
    assert trials["value"].between(0, 1).all()  # validation accuracy of each trial
    assert (trials["steps"] >= trials["validations"]).all()  # a validation after each step at most
    assert trials["learning_rate"].between(1e-4, 3e-3).all()
    assert set(trials["per_device_train_batch_size"]) <= {16, 32}
    assert trials["learning_rate"].nunique() == 3  # each trial its own values

    text = (out / "best_params.yaml").read_text()
    best = yaml.safe_load(text)["finetune"]
    row = trials.loc[trials["value"].idxmax()]
    assert best["learning_rate"] == pytest.approx(row["learning_rate"])
    assert best["num_train_epochs"] == row["num_train_epochs"] and best["warmup_steps"] is None
    assert f"validation accuracy {row['value']:.4f}" in text.splitlines()[0]


def search_args(c: Any, out: Path, *extra: str) -> list[str]:
    return ["--params", c.params[1], "--space", c.params[1], "--data-dir", str(c.data),
            "--base-model-dir", str(c.multitasked), "--out", str(out), *extra]  # fmt: skip


def fake_finetune(fail: set[int] = frozenset(), calls: list | None = None) -> Any:
    """A finetune that trains nothing: its validation accuracy is 100 x the learning rate, and
    the calls numbered in `fail` (from 1) raise, as a diverged run does."""
    calls = [] if calls is None else calls

    def finetune(*args: Any, extra_callbacks: Any = (), **kwargs: Any) -> dict:
        calls.append(args[4])
        if len(calls) in fail:
            raise ValueError("finetune: the training loss is nan at step 3/10: training diverged")
        return {"validation": {"accuracy": args[4].learning_rate * 100}}

    return finetune


@pytest.fixture()
def chain(tmp_path: Path, tiny_model_dir: Path, trec_files: dict) -> Any:
    return ready_for_finetune(tmp_path, tiny_model_dir, trec_files, search=SPACE)


@pytest.mark.parametrize(
    ("spaces_", "message"),
    [
        ({"full": FULL | {"learning_rate": {"low": 1e-3, "high": 1e-5}}}, r"must be low <= high"),
        ({"full": FULL | {"layer_decay": {"low": 0, "high": 1, "log": True}}}, r"above 0"),
        ({"full": FULL | {"per_device_train_batch_size": []}}, r"at least 1 item"),
        # a param the method does not have: refused with the ones it has
        (
            {"full": FULL | {"lora_r": [4, 8]}},
            r"search.spaces.full.lora_r: unknown key; valid keys here: layer_decay, "
            r"learning_rate, num_train_epochs, optimizer",
        ),
        (
            {"prompt_tuning": {"layer_decay": {"low": 0.8, "high": 1.0}}},
            r"spaces.prompt_tuning.layer_decay: unknown key; valid keys here: .*num_virtual_tokens",
        ),
        ({"full": {"learning_rate": {"low": 1e-5, "hi": 1e-4}}}, r"range.hi: unknown key; valid "),
    ],
)
def test_bad_search_space_is_named(spaces_: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_section({"search": SPACE | {"spaces": spaces_}}, "search")


def test_bad_trial_count_is_named() -> None:
    with pytest.raises(ValueError, match=r"search.n_trials: Input should be greater than 0"):
        parse_section({"search": SPACE | {"n_trials": 0}}, "search")


def test_a_range_end_finetune_refuses_is_named_before_any_trial() -> None:
    params = parse_section({"finetune": TINY_FINETUNE}, "finetune")
    space = FullSpace(warmup_ratio=Range(low=0.0, high=1.5))
    with pytest.raises(ValueError, match=r"spaces.full.warmup_ratio: 1.5 is not a valid finetune"):
        spaces.check_space(space, "spaces.full", params)
    values = spaces.check_space(FullSpace(layer_decay=[0.9, 1.0]), "x", params)
    assert values == {"layer_decay": [0.9, 1.0]}


def test_the_space_follows_method_and_family() -> None:
    lora = {"lora_r": [4, 8], "learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}}
    t5 = {"optimizer": ["adafactor"], "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}}
    data = SPACE | {
        "spaces": {"full": FULL, "lora": lora},
        "family_spaces": {"seq2seq": {"full": t5}},
    }
    parsed = parse_section({"search": data}, "search")
    where, space = spaces.chosen_space(parsed, "encoder", "lora")
    assert where == "spaces.lora" and list(spaces.searched(space)) == ["learning_rate", "lora_r"]
    where, space = spaces.chosen_space(parsed, "seq2seq", "full")
    assert where == "family_spaces.seq2seq.full" and space.optimizer == ["adafactor"]
    with pytest.raises(ValueError, match=r"no space for finetune.method prompt_tuning .*add "):
        spaces.chosen_space(parsed, "encoder", "prompt_tuning")


def test_a_failing_trial_is_recorded_and_the_search_goes_on(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trials_module, "finetune", fake_finetune(fail={2}))
    out = tmp_path / "search"
    study = search.main(search_args(chain, out))

    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials["error"][1].startswith("ValueError: finetune: the training loss is nan")
    assert len(study.trials) == 4 and (out / "report.md").is_file()
    assert (out / "history.png").stat().st_size > 0


def test_more_trials_on_the_command_line_extend_the_study(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list = []
    monkeypatch.setattr(trials_module, "finetune", fake_finetune(calls=calls))
    out = tmp_path / "search"
    first = search.main(search_args(chain, out, "--trials", "2"))
    assert [t.state.name for t in first.trials] == ["COMPLETE", "COMPLETE"]

    again = search.main(search_args(chain, out, "--trials", "4"))  # the same study, 2 more
    assert again.study_name == first.study_name
    assert [t.number for t in again.trials] == [0, 1, 2, 3] and len(calls) == 4
    assert len(pd.read_csv(out / "trials.csv")) == 4


def test_failures_in_a_row_stop_the_search_with_the_last_error(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trials_module, "finetune", fake_finetune(fail={1, 2, 3, 4}))
    out = tmp_path / "search"
    with pytest.raises(TrialsFailing, match=r"3 trials failed in a row .*last with: ValueError"):
        search.main(search_args(chain, out))
    assert list(pd.read_csv(out / "trials.csv")["state"]) == ["FAIL"] * 3


def test_each_validation_is_reported_and_a_pruner_stops_the_trial(
    chain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # no accuracy reaches 2: every trial
    monkeypatch.setattr(studies, "make_pruner", lambda name: always)
    out = tmp_path / "search"
    search.main(search_args(chain, out))

    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["state"]) == ["PRUNED"] * 3
    assert (trials["validations"] == 1).all()  # stopped at the first of its epochs
    assert (trials["steps"] >= 1).all()  # the steps it trained before
    assert trials["value"].between(0, 1).all()  # its last reported validation
    assert not (out / "best_params.yaml").exists()


def learns_above(threshold: float) -> Any:
    """A finetune whose four validations go through the search's real callback: a learning
    rate below `threshold` cannot learn (accuracy stays near chance, lower rates lower), one at
    or above it climbs; each validation is reported to optuna as a Trainer's would be."""

    def finetune(*args: Any, extra_callbacks: Any = (), **kwargs: Any) -> dict:
        lr = args[4].learning_rate
        for i in range(1, 5):
            value = 0.5 + 0.1 * i if lr >= threshold else 0.1 + lr
            for callback in extra_callbacks:
                state = SimpleNamespace(global_step=10 * i)
                callback.on_evaluate(None, state, None, metrics={"eval_accuracy": value})
        return {"validation": {"accuracy": value}}

    return finetune


def test_the_median_pruner_stops_trials_where_half_the_space_cannot_learn(
    tmp_path: Path, tiny_model_dir: Path, trec_files: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = SPACE | {"n_trials": 16, "pruner": "median"}  # search.yaml's default pruner
    space["spaces"] = {"full": {"learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}}}
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, search=space)
    monkeypatch.setattr(trials_module, "finetune", learns_above(1e-3))  # half the log range
    search.main(search_args(c, tmp_path / "search"))

    trials = pd.read_csv(tmp_path / "search" / "trials.csv")
    pruned = trials[trials["state"] == "PRUNED"]
    assert len(trials) == 16 and len(pruned) >= 1
    assert (pruned["learning_rate"] < 1e-3).all()  # only the rates that cannot learn
    assert (pruned["validations"] < 4).all() and (pruned["steps"] < 40).all()  # stopped early
    learners = trials[trials["learning_rate"] >= 1e-3]
    assert (learners["state"] == "COMPLETE").all() and len(learners) >= 1


def test_pruners_by_name() -> None:
    assert isinstance(studies.make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(studies.make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    halving = studies.make_pruner("successive_halving")
    assert isinstance(halving, optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(studies.make_pruner("none"), optuna.pruners.NopPruner)


# a search process whose finetune trains nothing (fake_finetune's values) and whose call
# number HANG writes the pid to MARK and then hangs, to be killed there
SCRIPT = """
import os, sys, time
from pathlib import Path
import bertfit.search.trials as trials
calls, hang, mark = [], int(sys.argv[1]), Path(sys.argv[2])
def finetune(*args, extra_callbacks=(), **kwargs):
    calls.append(1)
    if len(calls) == hang:
        mark.write_text(str(os.getpid()))
        time.sleep(600)
    if hang < 0:  # two processes: each waits until both run a trial, then goes on
        mark.joinpath(str(os.getpid())).write_text("")
        deadline = time.time() + 60
        while len(list(mark.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.3)
    return {"validation": {"accuracy": args[4].learning_rate * 100}}
trials.finetune = finetune
from bertfit.search import main
main(sys.argv[3:])
"""


def search_process(hang: int, mark: Path, args: list[str], log: Path) -> subprocess.Popen:
    """The search in a process of its own, its log in `log`."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent)])}
    command = [sys.executable, "-c", textwrap.dedent(SCRIPT), str(hang), str(mark), *args]
    with log.open("w") as stderr:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the search ended first: {log.read_text()}")
        if time.time() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout}s")
        time.sleep(0.2)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_search_resumes_keeping_its_finished_trials(
    chain: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kill: signal.Signals,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out, mark = tmp_path / "search", tmp_path / "running-trial-3"
    log = tmp_path / "search.log"
    process = search_process(3, mark, search_args(chain, out), log)
    wait_for(mark, process, log)  # trial 3 of 3 is running
    process.send_signal(kill)
    process.wait(timeout=60)
    before = pd.read_csv(out / "trials.csv")
    assert list(before["state"]) == ["COMPLETE", "COMPLETE"]  # written as trials finished

    monkeypatch.setattr(trials_module, "finetune", fake_finetune())
    caplog.set_level("INFO", logger="bertfit.search")
    study = search.main(search_args(chain, out))  # the same command: it resumes

    after = pd.read_csv(out / "trials.csv")
    assert list(after["state"]) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    pd.testing.assert_frame_equal(after[:2].drop(columns="duration_s"),
                                  before.drop(columns="duration_s"), check_dtype=False)  # fmt: skip
    expected = "its process (pid" if kill == signal.SIGKILL else "KeyboardInterrupt: signal 15"
    assert after["error"][2].startswith(expected)
    assert after["learning_rate"][3] == after["learning_rate"][2]  # its values run again
    assert after["retry_of"][3] == 2 and pd.isna(after["error"][3])  # not the failed one's error
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial 3/3")]
    assert "(#2's values again)" in lines[-1] and lines[-1].endswith(", the last")
    assert study.study_name in (out / "report.md").read_text()


def share_one_study(chain: Any, tmp_path: Path, url: str) -> None:
    """Two search processes started together on one database: both run trials of one study,
    n trials in all, no values run twice."""
    out, marks = tmp_path / "search", tmp_path / "workers"
    marks.mkdir()
    args = search_args(chain, out, "--storage", url)
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    processes = [search_process(-1, marks, args, log) for log in logs]
    for p, log in zip(processes, logs, strict=True):
        assert p.wait(timeout=300) == 0, log.read_text()

    storage = optuna.storages.RDBStorage(url)
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 2  # both processes ran trials of the one study
    assert 3 <= len(trials) <= 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.params["learning_rate"] for t in trials}) == len(trials)  # none run twice


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(chain: Any, tmp_path: Path) -> None:
    share_one_study(chain, tmp_path, f"sqlite:///{tmp_path / 'search.db'}")


@pytest.mark.slow
def test_two_processes_share_one_study_on_a_postgresql_server(
    chain: Any, tmp_path: Path, postgres_url: str
) -> None:
    share_one_study(chain, tmp_path, postgres_url)


@pytest.mark.slow
def test_worker_processes_share_the_journal_and_the_cores(chain: Any, tmp_path: Path) -> None:
    out = tmp_path / "search"
    study = search.main(search_args(chain, out, "--workers", "2"))

    trials = study.trials
    assert 3 <= len(trials) <= 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert os.getpid() not in {t.user_attrs["worker"]["pid"] for t in trials}  # in the workers
    assert len({t.params["learning_rate"] for t in trials}) == len(trials)  # none run twice
    assert (out / studies.JOURNAL_FILE).is_file() and (out / "report.md").is_file()


def test_a_lora_space_runs(tmp_path: Path, tiny_model_dir: Path, trec_files: dict) -> None:
    lora = {
        "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
        "lora_r": [2, 4],
        "lora_dropout": {"low": 0.0, "high": 0.2},
    }
    space = SPACE | {"n_trials": 2, "spaces": {"lora": lora}}
    c = ready_for_finetune(
        tmp_path, tiny_model_dir, trec_files, search=space, finetune={"method": "lora"}
    )
    study = search.main(search_args(c, tmp_path / "search"))

    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert set(study.best_params) == {"learning_rate", "lora_r", "lora_dropout"}
    assert "-lora-encoder-" in study.study_name


CONTRASTIVE = {
    "contrastive_learning_rate": {"low": 1e-4, "high": 1e-3, "log": True},
    "contrastive_iterations": {"low": 1, "high": 2},
    "contrastive_batch_size": [8, 16],
}
FEW_LABELS = {"few_labels_method": "contrastive", "few_labels_per_class": 64}


def test_the_trials_train_the_method_the_few_labels_switch_picks(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_files: dict,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """80 train rows of 6 classes (13 a class) are few labels: the pipeline's finetune would
    train contrastive, so the trials do, drawn from its space, not finetune.method's (full)."""
    space = SPACE | {"n_trials": 2, "spaces": {"full": FULL, "contrastive": CONTRASTIVE}}
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, search=space, finetune=FEW_LABELS)
    trained: list[str] = []
    real = trials_module.finetune

    def finetune(*args: Any, **kwargs: Any) -> dict:
        metrics = real(*args, **kwargs)
        trained.append(metrics["method"])
        return metrics

    monkeypatch.setattr(trials_module, "finetune", finetune)
    caplog.set_level("INFO", logger="bertfit.search")
    study = search.main(search_args(c, tmp_path / "search"))

    assert trained == ["contrastive", "contrastive"]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert set(study.best_params) == set(CONTRASTIVE)
    assert "-contrastive-encoder-" in study.study_name
    assert (
        "the trials train method contrastive in place of finetune.method full: 13 train rows "
        "per class <= few_labels_per_class 64" in caplog.text
    )
    best = yaml.safe_load((tmp_path / "search" / "best_params.yaml").read_text())["finetune"]
    assert set(best) == set(CONTRASTIVE)


def test_a_search_on_fewer_rows_than_the_pipeline_says_when_their_methods_differ(
    tmp_path: Path,
    tiny_model_dir: Path,
    trec_files: dict,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The search's 80 rows are 13 a class, the pipeline's 240 are 40: above a threshold of
    20, the pipeline trains full while the trials train contrastive."""
    space = SPACE | {"n_trials": 1, "spaces": {"full": FULL, "contrastive": CONTRASTIVE}}
    few = FEW_LABELS | {"few_labels_per_class": 20}
    c = ready_for_finetune(tmp_path, tiny_model_dir, trec_files, search=space, finetune=few)
    calls: list = []
    monkeypatch.setattr(trials_module, "finetune", fake_finetune(calls=calls))
    caplog.set_level("INFO", logger="bertfit.search")
    search.main(search_args(c, tmp_path / "search"))

    assert [p.method for p in calls] == ["contrastive"]
    assert (
        "the pipeline's finetune trains method full on its 240 train rows (40 train rows per "
        "class > few_labels_per_class 20), the trials contrastive on the search's 80" in caplog.text
    )


def test_a_contrastive_space_has_only_the_pair_loops_params() -> None:
    with pytest.raises(
        ValueError,
        match=r"search.spaces.contrastive.learning_rate: unknown key; valid keys here: "
        r"contrastive_batch_size, contrastive_iterations, contrastive_learning_rate, "
        r"contrastive_max_pairs",
    ):
        parse_section(
            {"search": SPACE | {"spaces": {"contrastive": {"learning_rate": [1e-5]}}}}, "search"
        )
    parsed = parse_section({"search": SPACE}, "search")
    why = "13 train rows per class <= few_labels_per_class 64"
    with pytest.raises(
        ValueError,
        match=r"no space for method contrastive, which finetune trains on these rows \(13 train "
        r"rows per class <= few_labels_per_class 64; family encoder\): add "
        r"search.spaces.contrastive",
    ):
        spaces.chosen_space(parsed, "encoder", "contrastive", why)


def test_search_is_a_bertfit_command(capsys: pytest.CaptureFixture[str]) -> None:
    from bertfit import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["search", "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert all(option in shown for option in ("--storage", "--workers", "--queue-best"))
