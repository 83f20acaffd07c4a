"""bertfit predict on tiny models of each kind: evaluate's predictions, every format, bad inputs."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import shutil
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertfit.data.tasks import Task, read_task, write_task
from bertfit.evaluation import evaluate
from bertfit.models.family import load_trained
from bertfit.models.manifest import MANIFEST_FILE, Manifest
from bertfit.params import EvaluateParams, FinetuneParams
from bertfit.predict import (
    PredictError,
    default_output,
    main,
    predict_file,
    predict_frame,
    read_input,
)
from bertfit.training.finetune import finetune
from tests.conftest import TINY_FINETUNE

TOY = Task("toy", ["no", "yes"], sentence_pair=False)  # "what" questions are yes
QLEN = Task("qlen", [], problem="regression", metric="pearson", sentence_pair=False)
ADAFACTOR = {"optimizer": "adafactor", "learning_rate": 3e-3, "weight_decay": 0.0}
# model kind -> (base model, task, finetune params over the tiny ones)
KINDS: dict[str, tuple[str, Task, dict]] = {
    "stock": ("bert", TOY, {}),
    "pooled": ("bert", TOY, {"truncation": "hierarchical", "feature": "mean"}),
    "regression": ("bert", QLEN, {}),
    "seq2seq": ("t5", TOY, ADAFACTOR),
    "lora": ("bert", TOY, {"method": "lora", "learning_rate": 1e-2}),
}
EVAL = EvaluateParams(per_device_eval_batch_size=8, prediction="rank", mixed_precision="no")
ARGS = ["--batch-size", "8", "--mixed-precision", "no"]  # as EVAL scores


def labelled(rows: list[dict]) -> pd.DataFrame:
    texts = [r["text"] for r in rows]
    return pd.DataFrame(
        {
            "text": texts,
            "label": ["yes" if t.lower().startswith("what") else "no" for t in texts],
            "length": [len(t.split()) / 10 for t in texts],
        }
    )


@pytest.fixture(scope="module")
def toy_rows(trec_sample: dict) -> dict[str, pd.DataFrame]:
    return {
        "train": labelled(trec_sample["train"][:48]),
        "test": labelled(trec_sample["test"][:24]),
    }


def rows_for(task: Task, df: pd.DataFrame) -> pd.DataFrame:
    if task.problem == "regression":
        return df.drop(columns="label").rename(columns={"length": "label"})
    return df.drop(columns="length")


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    tiny_t5_dir: Path,
    toy_rows: dict[str, pd.DataFrame],
) -> Callable[[str], Path]:
    """The finetune stage's directory for a model kind, trained once (one short epoch)."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            base, task, extra = KINDS[kind]
            out = tmp_path_factory.mktemp(kind)
            params = TINY_FINETUNE | {
                "num_train_epochs": 1,
                "per_device_train_batch_size": 16,
                "layer_decay": 1.0,
                "warmup_ratio": 0.0,
                "init_head_from_multitask": False,
            }
            train = rows_for(task, toy_rows["train"])
            finetune(
                str({"bert": tiny_model_dir, "t5": tiny_t5_dir}[base]), task, train, train,
                FinetuneParams(**(params | extra)), 16 if "truncation" in extra else 32,
                out / "model", out / "reports",
            )  # fmt: skip
            made[kind] = out / "model"
        return made[kind]

    return get


def evaluated(model_dir: Path, task: Task, rows: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """evaluate's test predictions on `rows` (the task's folder is named after it, as collect's)."""
    write_task(task, {"test": rows}, [], tmp_path / task.name)
    _, predictions = evaluate(model_dir, read_task(tmp_path / task.name), EVAL, tmp_path / "ev")
    return predictions


@pytest.mark.parametrize("kind", list(KINDS))
def test_predictions_equal_evaluates_on_the_same_rows(
    kind: str,
    model_dir: Callable[[str], Path],
    toy_rows: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    task = KINDS[kind][1]
    rows = rows_for(task, toy_rows["test"])
    expected = evaluated(model_dir(kind), task, rows, tmp_path)
    capsys.readouterr()
    given = rows.assign(id=range(len(rows)))
    given.to_csv(tmp_path / "new.csv", index=False)

    main([str(model_dir(kind)), str(tmp_path / "new.csv"), *ARGS])  # the console command
    out = pd.read_csv(tmp_path / "new.predictions.csv", dtype={"text": str})
    err = capsys.readouterr().err
    assert "%|" not in err and "Loading weights" not in err  # no bars off a terminal
    assert out["text"].tolist() == rows["text"].tolist() and out["id"].tolist() == list(range(24))
    if task.problem == "regression":
        assert list(out.columns) == [*given.columns, "score"]
        np.testing.assert_allclose(out["score"], expected["score"], rtol=1e-5, atol=1e-6)
        return
    probs = out[["prob_no", "prob_yes"]].to_numpy()
    assert list(out.columns) == [*given.columns, "prediction", "prob_no", "prob_yes"]
    assert out["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # evaluate's predictions file has predict's columns and values
    np.testing.assert_allclose(probs, expected[["prob_no", "prob_yes"]].to_numpy(), atol=1e-6)
    assert (np.asarray(TOY.labels)[probs.argmax(axis=1)] == out["prediction"]).all()


@pytest.mark.parametrize("name", ["new.csv", "new.tsv", "new.jsonl", "new.jsonl.gz", "new.parquet"])
def test_every_format_round_trips(
    name: str, model_dir: Callable[[str], Path], toy_rows: dict, tmp_path: Path
) -> None:
    rows = toy_rows["test"].drop(columns="length").head(6)
    texts = rows["text"].tolist()
    texts[0] = 'what is "quoted", with\ta tab ?'
    texts[1] = "où est la gare, café ?"
    given = rows.assign(text=texts, id=range(6), code=["007", "NA", "", "null", "1.50", "x"])
    path = tmp_path / name
    fmt = "parquet" if name.endswith("parquet") else ("jsonl" if ".jsonl" in name else None)
    if fmt == "parquet":
        given.to_parquet(path)
    elif fmt == "jsonl":
        given.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        given.to_csv(path, sep="\t" if name.endswith(".tsv") else ",", index=False)

    written = predict_file(path, model_dir("stock"), batch_size=4, mixed_precision="no")
    assert (
        written == default_output(path) == path.with_name(name.replace("new.", "new.predictions."))
    )
    if fmt == "parquet":
        out = pd.read_parquet(written)
    elif fmt == "jsonl":
        out = pd.read_json(written, lines=True, dtype=False)
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        out = pd.read_csv(written, sep=sep, dtype=str, keep_default_na=False)
        given = given.astype(str)  # CSV and TSV cells are text, and stay exactly that text
    pd.testing.assert_frame_equal(
        out[given.columns], given, check_dtype=fmt == "parquet", check_index_type=False
    )
    assert set(out["prediction"]) <= set(TOY.labels)
    np.testing.assert_allclose(
        out[["prob_no", "prob_yes"]].astype(float).sum(axis=1), 1.0, atol=1e-5
    )


def test_format_override_and_output_format(
    model_dir: Callable[[str], Path], toy_rows: dict, tmp_path: Path
) -> None:
    rows = toy_rows["test"].drop(columns="length").head(4)
    rows.to_csv(tmp_path / "texts.txt", sep="\t", index=False)
    with pytest.raises(PredictError, match=r"texts.txt: cannot tell the format .* --format"):
        predict_file(tmp_path / "texts.txt", model_dir("stock"))
    written = predict_file(tmp_path / "texts.txt", model_dir("stock"), fmt="tsv")
    assert written == tmp_path / "texts.predictions.txt"
    assert len(pd.read_csv(written, sep="\t")) == 4
    # an output named for another format is written in that format
    converted = predict_file(
        tmp_path / "texts.txt", model_dir("stock"), tmp_path / "out.parquet", fmt="tsv"
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(converted), pd.read_csv(written, sep="\t", dtype={"label": str})
    )


def test_sentence_pairs_are_asked_for_and_refused_as_the_task_says(
    model_dir: Callable[[str], Path], toy_rows: dict, tmp_path: Path
) -> None:
    single = model_dir("stock")
    pair_dir = tmp_path / "pair"  # the stock model, recorded as trained on sentence pairs
    shutil.copytree(single, pair_dir)
    manifest = json.loads((pair_dir / MANIFEST_FILE).read_text())
    manifest["task"]["sentence_pair"] = True
    (pair_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    rows = toy_rows["test"].drop(columns="length").head(8)
    rows = rows.assign(text_pair=rows["text"].str.upper(), second=rows["text"].str.upper())
    rows[["text", "second", "label"]].to_csv(tmp_path / "pairs.csv", index=False)

    with pytest.raises(PredictError, match=r"reads sentence pairs .*--pair-column"):
        predict_file(tmp_path / "pairs.csv", pair_dir)
    with pytest.raises(PredictError, match=r"reads single texts .*drop --pair-column"):
        predict_file(tmp_path / "pairs.csv", single, pair_column="second")
    with pytest.raises(PredictError, match=r"no column 'secnd'.*'text', 'second', 'label'"):
        predict_file(tmp_path / "pairs.csv", pair_dir, pair_column="secnd")
    written = predict_file(
        tmp_path / "pairs.csv", pair_dir, pair_column="second", batch_size=8, mixed_precision="no"
    )
    expected = evaluated(pair_dir, TOY, rows[["text", "text_pair", "label"]], tmp_path)
    assert pd.read_csv(written)["prediction"].tolist() == expected["prediction"].tolist()


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_input_files_are_named_with_the_fix(
    model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    stock = model_dir("stock")

    def fails(path: Path, match: str, **kw: object) -> None:
        with pytest.raises(PredictError, match=match):
            predict_file(path, stock, **kw)

    fails(tmp_path / "absent.csv", r"absent.csv: no such file")
    fails(write_csv(tmp_path / "empty.csv", ""), r"empty.csv: the file is empty \(0 bytes\)")
    fails(write_csv(tmp_path / "header.csv", "text,label\n"), r"no rows \(columns: \['text'")
    pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(tmp_path / "none.parquet")
    fails(tmp_path / "none.parquet", r"none.parquet: no rows")
    body = write_csv(tmp_path / "body.csv", "id,body\n1,what is it ?\n")
    fails(body, r"body.csv: no column 'text'; columns present: \['id', 'body'\].*--text-column")
    assert pd.read_csv(predict_file(body, stock, text_column="body"))["prediction"].size == 1
    blank = write_csv(tmp_path / "blank.csv", 'text\nwhat is it ?\n""\n"   "\nwho is he ?\n')
    fails(blank, r"2 of 4 rows have no text in column 'text' \(data rows 2, 3\); drop")
    nulls = tmp_path / "nulls.jsonl"
    nulls.write_text('{"text": "what ?"}\n{"text": null}\n{"text": 5}\n', encoding="utf-8")
    fails(nulls, r"column 'text' must hold text, but data row 3 holds 5 \(int\)")
    write_csv(tmp_path / "broken.jsonl", '{"text": "what ?"}\n{"text": \n')
    fails(tmp_path / "broken.jsonl", r"broken.jsonl: cannot read it as jsonl")
    done = predict_file(body, stock, tmp_path / "done.csv", text_column="body")
    fails(
        done, r"already has column\(s\) \['prediction', 'prob_no', 'prob_yes'\]", text_column="body"
    )
    fails(body, r"the output would overwrite the input", output_file=body)


def test_directories_bertfit_did_not_write_are_refused(
    tiny_model_dir: Path, model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    texts = write_csv(tmp_path / "t.csv", "text\nwhat is it ?\n")

    def fails(directory: Path, match: str) -> None:
        with pytest.raises(PredictError, match=match):
            predict_file(texts, directory)

    fails(tmp_path / "nowhere", r"nowhere: no such model directory.*models/finetune")
    fails(tiny_model_dir, r"bertfit wrote \(a Hugging Face model.*: bertfit_model.json is missing")
    fails(texts, r"t.csv: a file, not a model directory; the model directory comes first")
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    Manifest("encoder", "none", "pretrain").save(bare)
    fails(bare, r"a bare encoder from the pretrain stage, with no classifier")
    (bare / MANIFEST_FILE).write_text("{not json")
    fails(bare, r"bertfit_model.json: unreadable")


def test_the_console_command_exits_with_one_line(
    tmp_path: Path, model_dir: Callable[[str], Path]
) -> None:
    scripts = entry_points(group="console_scripts", name="bertfit")
    assert [s.value for s in scripts] == ["bertfit.cli:main"]  # pyproject's [project.scripts]
    texts = write_csv(tmp_path / "t.csv", "body\nwhat is it ?\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(model_dir("stock")), str(texts)])
    message = str(exit_info.value.code)
    assert message.startswith("bertfit predict: error:") and "\n" not in message
    assert "columns present: ['body']" in message
    with pytest.raises(SystemExit) as exit_info:
        main([str(texts), "--batch-size", "0"])
    assert exit_info.value.code == 2  # argparse: usage error


def test_predict_frame_serves_python_callers(
    model_dir: Callable[[str], Path], toy_rows: dict
) -> None:
    df = toy_rows["test"].drop(columns="length").head(5)
    trained = load_trained(model_dir("stock"))
    out = predict_frame(trained, df, batch_size=8)
    assert list(out.columns) == [*df.columns, "prediction", "prob_no", "prob_yes"]
    assert out.index.equals(df.index) and set(out["prediction"]) <= set(TOY.labels)
    with pytest.raises(PredictError, match=r"df: no column 'body'; columns present"):
        predict_frame(trained, df, text_column="body")


# --- the audit's cases (issue 38): output, damaged weights, temporary files, file modes -------


def test_a_truncated_weights_file_is_named_before_any_row_is_read(
    model_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    damaged = tmp_path / "model"
    shutil.copytree(model_dir("stock"), damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp_path / "in.csv").write_text("text\nwhat is a cat ?\n")
    with pytest.raises(PredictError, match=r"model.safetensors: cannot be read .*truncated or "
                       r"corrupt; copy the model directory again, or restore it with `dvc "
                       r"checkout"):  # fmt: skip
        predict_file(tmp_path / "in.csv", damaged)


def test_an_unwritable_output_fails_before_scoring(
    model_dir: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in.csv").write_text("text\nwhat is a cat ?\n")
    scored = []
    monkeypatch.setattr("bertfit.predict.load_trained", lambda d: scored.append(d))
    (tmp_path / "outdir").mkdir()
    with pytest.raises(PredictError, match=r"outdir: a directory; give --output a file name"):
        predict_file(tmp_path / "in.csv", model_dir("stock"), tmp_path / "outdir")
    # a folder that cannot be written (a file where it should be: root writes through modes)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(PredictError, match=r"taken: cannot write there \(FileExistsError"):
        predict_file(tmp_path / "in.csv", model_dir("stock"), tmp_path / "taken" / "out.csv")
    assert scored == []  # neither failure loaded the model, let alone scored a row
    assert not list(tmp_path.rglob(".*.tmp"))


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.jsonl", "out.parquet"])
def test_the_output_is_never_written_through_a_planted_symlink(tmp_path: Path, name: str) -> None:
    from bertfit.predict import write_output

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for planted in (f".tmp-{name}", f".{name}.tmp"):  # the fixed names of before
        (tmp_path / planted).symlink_to(victim)
    df = pd.DataFrame({"text": ["a", "b"], "prediction": ["x", "y"]})
    fmt = name.split(".")[1]
    write_output(df, tmp_path / name, fmt)
    assert victim.read_text() == "precious"
    readers = {"parquet": pd.read_parquet, "csv": pd.read_csv,
               "jsonl": lambda p: pd.read_json(p, lines=True)}  # fmt: skip
    back = readers[fmt](tmp_path / name)
    pd.testing.assert_frame_equal(back, df)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_model_files_are_readable_like_every_other_output(model_dir: Callable[[str], Path]) -> None:
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in model_dir("stock").iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~umask


def test_files_are_read_and_refused_as_collect_reads_them(tmp_path: Path) -> None:
    # the reader is collect's (sources.read_table): its line numbers and fixes, predict's wording
    bz = tmp_path / "t.csv.bz2"
    bz.write_bytes(bz2.compress(b"text\n007\n"))
    assert read_input(bz, "csv")["text"].tolist() == ["007"]
    ragged = write_csv(tmp_path / "ragged.csv", "text,label\nfine,pos\nfine, really,pos\n")
    with pytest.raises(
        PredictError, match=r"ragged.csv: cannot read it as csv \(line 3\): expected"
    ):
        read_input(ragged, "csv")
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:-12])
    with pytest.raises(PredictError, match=r"cut.jsonl.gz: cannot read it as jsonl: .*truncated"):
        read_input(gz, "jsonl")
