"""bertfit predict: label a file of new texts with a model directory bertfit wrote.

    bertfit predict [MODEL_DIR] INPUT_FILE [--text-column body] [--pair-column second]

Reads CSV, TSV, JSONL (JSON lines; .gz or .bz2 for these three) or Parquet, by the file name's
ending or `--format`, through the reader collect uses for a task's files (data.sources.read_table:
the same parsing, and the same errors for a binary, truncated or ragged file); encodes the text
column (and `--pair-column` for a sentence-pair model) the way the model's manifest says it was
trained (models.manifest: truncation, max_seq_length, the task's prefix for text-to-text
models); scores it through evaluate's path (inference.model_scores: length-sorted batches, the
family's score, bf16 where asked for and available); and writes
every input row and column plus `prediction` (the label) and `prob_<label>` for each class, or
`score` for a regression task, in the input's format (or the one `--output`'s name says).

Any model directory bertfit's finetune stage wrote loads (models.family.load_trained): the
stock classifier, a pooled or hierarchical head, a text-to-text model (the label words ranked,
`prob_<label>` their softmax), a LoRA or prompt-tuning adapter on its base. Rows with a missing
or blank text are refused with their row numbers (a prediction for no text would only be the
class prior), as are an empty file, a missing column and a directory bertfit did not write.
These errors are `PredictError`s; the console command prints the one-line message and exits
with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors import safe_open

from bertfit import cli
from bertfit.data.encoding import Preprocessing
from bertfit.data.sources import COMPRESSED, FORMATS, UnreadableTable, read_table, table_format
from bertfit.data.tasks import Task
from bertfit.hardware import use_bf16
from bertfit.inference import class_probabilities, model_scores, probability_columns
from bertfit.models.family import Trained, load_trained
from bertfit.models.manifest import MANIFEST_FILE, Manifest, read_manifest
from bertfit.models.onnx import export_info, load_export
from bertfit.reporting import atomic_file, check_writable

log = logging.getLogger(__name__)

COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2"}  # written through a handle: named explicitly
DEFAULT_MODEL_DIR = Path("models/finetune")
SHOWN_ROWS = 10  # row numbers listed in an error; the rest are counted


class PredictError(ValueError):
    """Bad input to bertfit predict (file, column, model directory); the message says the fix."""


def input_format(path: Path, fmt: str | None) -> str:
    found = fmt or table_format(path)
    if found is None:
        raise PredictError(
            f"{path}: cannot tell the format from the name; name the file .csv, .tsv, .jsonl or "
            f".parquet (.gz or .bz2 for the text formats), or give --format "
            f"{{{','.join(FORMATS)}}}"
        )
    return found


def default_output(path: Path) -> Path:
    """`<input stem>.predictions.<the input's ending>`, beside the input."""
    suffixes = path.suffixes
    n = 2 if len(suffixes) >= 2 and suffixes[-1].lower() in COMPRESSED else 1
    ending = "".join(suffixes[-n:])
    return path.with_name(f"{path.name[: len(path.name) - len(ending)]}.predictions{ending}")


def read_input(path: Path, fmt: str) -> pd.DataFrame:
    """The rows of a CSV / TSV (cells as text, so `007` stays `007`), JSONL or Parquet file, read
    as collect reads a task's files (sources.read_table), its errors as PredictErrors."""
    try:
        return read_table(path, task=None, fmt=fmt)
    except FileNotFoundError:
        what = "a directory, not a file" if path.is_dir() else "no such file"
        raise PredictError(f"{path}: {what}; give the file of texts to predict") from None
    except UnreadableTable as err:
        at = f" (line {err.line})" if err.line else ""
        raise PredictError(
            f"{path}: cannot read it as {fmt}{at}: {err.problem} (or give --format)"
        ) from None
    except ValueError as err:  # empty, no rows, not UTF-8: the reader's message says the fix
        raise PredictError(str(err)) from None


def rows_named(rows: list[int]) -> str:
    """1-based data row numbers, the first SHOWN_ROWS of them and a count of the rest."""
    shown = ", ".join(str(i + 1) for i in rows[:SHOWN_ROWS])
    more = len(rows) - SHOWN_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def text_values(df: pd.DataFrame, column: str, where: object) -> list[str]:
    """The column's texts; a value that is no text, or a missing or blank text, is an error."""
    values = df[column].tolist()
    for i, value in enumerate(values):
        if not is_missing(value) and not isinstance(value, str):
            raise PredictError(
                f"{where}: column {column!r} must hold text, but data row {i + 1} holds "
                f"{value!r} ({type(value).__name__}); name the text's column with --text-column"
            )
    blank = [i for i, v in enumerate(values) if is_missing(v) or not v.strip()]
    if blank:
        raise PredictError(
            f"{where}: {len(blank)} of {len(values)} rows have no text in column {column!r} "
            f"(data rows {rows_named(blank)}); drop those rows or fill them in"
        )
    return values


def check_model_dir(model_dir: Path) -> tuple[Manifest, Task]:
    """The manifest of a directory bertfit's finetune wrote, and its task; a PredictError for
    any other directory."""
    if not model_dir.is_dir():
        if model_dir.is_file():
            raise PredictError(
                f"{model_dir}: a file, not a model directory; the model directory comes first: "
                f"bertfit predict MODEL_DIR INPUT_FILE"
            )
        raise PredictError(
            f"{model_dir}: no such model directory; give one bertfit's finetune stage wrote "
            f"(default {DEFAULT_MODEL_DIR}, made by `dvc repro`)"
        )
    if not (model_dir / MANIFEST_FILE).is_file():
        what = "a Hugging Face model directory" if (model_dir / "config.json").is_file() else ""
        raise PredictError(
            f"{model_dir}: not a model directory bertfit wrote{' (' + what + ')' if what else ''}"
            f": {MANIFEST_FILE} is missing, which records the model's labels and how its inputs "
            f"were built; point at {DEFAULT_MODEL_DIR} or another directory finetune wrote"
        )
    try:
        manifest = read_manifest(model_dir)
    except (ValueError, KeyError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise PredictError(
            f"{model_dir / MANIFEST_FILE}: unreadable ({err}); write the model again with finetune"
        ) from None
    if manifest.head == "none":
        raise PredictError(
            f"{model_dir}: a bare encoder from the {manifest.stage} stage, with no classifier; "
            f"predict with the finetune stage's model ({DEFAULT_MODEL_DIR})"
        )
    if manifest.task is None:
        raise PredictError(
            f"{model_dir}: the {manifest.stage} stage's model, one head per task "
            f"({sorted(manifest.heads)}); predict takes a model of one task ({DEFAULT_MODEL_DIR})"
        )
    check_weights_files(model_dir)
    return manifest, manifest.task


def check_weights_files(model_dir: Path) -> None:
    """Every safetensors file's header reads and its tensors fit the file's length (a copy cut
    short fails here, named, instead of in a SafetensorError traceback)."""
    for weights in sorted(model_dir.rglob("*.safetensors")):
        try:
            with safe_open(weights, "pt"):
                pass
        except Exception as err:  # safetensors' SafetensorError derives from Exception only
            raise PredictError(
                f"{weights}: cannot be read ({err}): the file is truncated or corrupt; copy the "
                f"model directory again, or restore it with `dvc checkout {model_dir}`"
            ) from None


def check_inputs(
    task: Task,
    prep: Preprocessing | None,
    model_dir: object,
    df: pd.DataFrame,
    text_column: str,
    pair_column: str | None,
    path: object,
) -> None:
    """The columns are there, the pair column matches the model, no output column is taken.
    `model_dir` and `path` name the model and the input in the errors."""
    wanted = [text_column] + ([pair_column] if pair_column else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise PredictError(
            f"{path}: no column {', '.join(map(repr, missing))}; columns present: "
            f"{list(df.columns)}; name the text's column with --text-column"
            + (" (and the second text's with --pair-column)" if task.sentence_pair else "")
        )
    if task.sentence_pair and pair_column is None:
        raise PredictError(
            f"{model_dir}: the model reads sentence pairs (task {task.name}: text and "
            f"text_pair); name the second text's column with --pair-column"
        )
    if task.sentence_pair is False and pair_column is not None:
        raise PredictError(
            f"{model_dir}: the model reads single texts (task {task.name}); drop --pair-column"
        )
    if task.sentence_pair is None:
        log.info(
            "%s's manifest does not say whether it reads sentence pairs (written before bertfit "
            "recorded it): predicting on %s",
            model_dir,
            "pairs" if pair_column else "single texts",
        )
    if pair_column is not None and prep is not None and prep.truncation == "hierarchical":
        raise PredictError(
            f"{model_dir}: the model reads single texts in pieces (truncation hierarchical); "
            "drop --pair-column"
        )
    taken = [c for c in output_columns(task) if c in df.columns]
    if taken:
        raise PredictError(
            f"{path}: already has column(s) {taken}, which predict writes; rename or drop them "
            "(is it a predictions file already?)"
        )


def output_columns(task: Task) -> list[str]:
    if task.problem == "regression":
        return ["score"]
    return ["prediction"] + [f"prob_{label}" for label in task.labels]


def input_rows(
    df: pd.DataFrame, text_column: str, pair_column: str | None, where: object
) -> pd.DataFrame:
    """The model's inputs: `text` (and `text_pair`) from the named columns, each checked."""
    rows = pd.DataFrame({"text": text_values(df, text_column, where)})
    if pair_column is not None:
        rows["text_pair"] = text_values(df, pair_column, where)
    return rows


def prediction_columns(
    trained: Trained,
    rows: pd.DataFrame,
    batch_size: int = 64,
    bf16: bool = False,
    disable_progress: bool | None = None,
) -> dict[str, Any]:
    """`prediction` and `prob_<label>` (or `score`) for input_rows(), encoded by the model's
    own encoder (its manifest's preprocessing) and scored as evaluate scores the test split."""
    task = trained.task
    dataset = trained.encoder().inputs(rows, task)
    scores = model_scores(trained, dataset, task, batch_size, bf16, disable_progress)
    if task.problem == "regression":
        return {"score": scores[:, 0].astype(float)}
    probs = class_probabilities(scores, trained.manifest.temperature)
    columns: dict[str, Any] = {"prediction": [task.labels[i] for i in scores.argmax(-1)]}
    return columns | probability_columns(task.labels, probs)


def predict_frame(
    trained: Trained,
    df: pd.DataFrame,
    text_column: str = "text",
    pair_column: str | None = None,
    batch_size: int = 64,
    bf16: bool = False,
) -> pd.DataFrame:
    """`df` with the predictions of a loaded model (load_trained) added, for Python callers."""
    manifest = trained.manifest
    check_inputs(
        trained.task, manifest.preprocessing, "the model", df, text_column, pair_column, "df"
    )
    rows = input_rows(df, text_column, pair_column, "df")
    return df.assign(**prediction_columns(trained, rows, batch_size, bf16))


def write_output(df: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write atomically (reporting.atomic_file), compressed as the name's ending says."""
    name = path.name.lower()
    compression = next((c for end, c in COMPRESSIONS.items() if name.endswith(end)), None)
    with atomic_file(path) as f:
        if fmt in ("csv", "tsv"):
            df.to_csv(f, sep="\t" if fmt == "tsv" else ",", index=False, compression=compression)
        elif fmt == "jsonl":
            df.to_json(f, orient="records", lines=True, force_ascii=False, compression=compression)
        else:  # a RangeIndex stays metadata; another index round-trips as in the input
            df.to_parquet(f)


def check_output(path: Path) -> None:
    """The output can be written, checked before any row is scored (scoring a large file takes
    minutes; failing after it wasted them)."""
    if path.is_dir():
        raise PredictError(f"{path}: a directory; give --output a file name, e.g. {path}/out.csv")
    try:
        check_writable(path.parent)
    except PermissionError as err:
        raise PredictError(f"{err}; or give --output a path you can write") from None


def predict_file(
    input_file: Path,
    model_dir: Path = DEFAULT_MODEL_DIR,
    output_file: Path | None = None,
    text_column: str = "text",
    pair_column: str | None = None,
    fmt: str | None = None,
    batch_size: int = 64,
    mixed_precision: str = "auto",
    disable_progress: bool | None = None,
) -> Path:
    """Predict every row of `input_file` with the model in `model_dir`; returns the output path.

    `fmt` overrides the format the input's name says; the output is written in the format its
    own name says, else the input's. The files, columns and texts are checked before the model
    loads.
    """
    input_file, model_dir = Path(input_file), Path(model_dir)
    manifest, task = check_model_dir(model_dir)
    fmt = input_format(input_file, fmt)
    output_file = Path(output_file) if output_file is not None else default_output(input_file)
    out_fmt = table_format(output_file) or fmt
    if output_file.resolve() == input_file.resolve():
        raise PredictError(f"{output_file}: the output would overwrite the input; give --output")
    check_output(output_file)
    df = read_input(input_file, fmt)
    check_inputs(task, manifest.preprocessing, model_dir, df, text_column, pair_column, input_file)
    rows = input_rows(df, text_column, pair_column, input_file)

    bf16 = use_bf16(mixed_precision)
    trained = load_export(model_dir) if export_info(model_dir) else load_trained(model_dir)
    log.info(
        "predicting %d rows of %s with %s (%s family, %s head, method %s; task %s, %s); bf16 %s",
        len(df),
        input_file,
        model_dir,
        manifest.family,
        manifest.head,
        manifest.method,
        task.name,
        task.problem,
        bf16,
    )
    out = df.assign(**prediction_columns(trained, rows, batch_size, bf16, disable_progress))
    write_output(out, output_file, out_fmt)
    if task.problem == "classification":
        counts = Counter(out["prediction"])
        log.info("predicted %s", json.dumps({label: counts[label] for label in task.labels}))
    log.info("wrote %d rows to %s", len(out), output_file)
    return output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help=f"a model directory bertfit's finetune wrote (default: {DEFAULT_MODEL_DIR})",
    )
    parser.add_argument(
        "input_file",
        type=Path,
        help="the texts: .csv, .tsv, .jsonl (.gz or .bz2 for these) or .parquet",
    )
    parser.add_argument(
        "--text-column", default="text", help="the column holding the texts (default: text)"
    )
    parser.add_argument(
        "--pair-column",
        default=None,
        help="the column of the second texts, for a model trained on sentence pairs",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write (default: <input stem>.predictions.<input's ending>, beside it)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the input's format, when its name does not say it",
    )
    parser.add_argument(
        "--batch-size", type=cli.positive_int, default=64, help="texts per batch (default: 64)"
    )
    cli.add_mixed_precision(parser)


def run(args: argparse.Namespace) -> None:
    """The subcommand: progress bars only on a terminal (cli.progress_bars, applied by
    configure_logging), user errors as one line, exit 1."""
    cli.configure_logging()
    try:
        predict_file(
            args.input_file,
            args.model_dir,
            args.output,
            args.text_column,
            args.pair_column,
            args.format,
            args.batch_size,
            args.mixed_precision,
        )
    except PredictError as err:
        raise SystemExit(f"bertfit predict: error: {err}") from None


def main(argv: list[str] | None = None) -> None:
    """`bertfit predict ARGS`, given the subcommand's arguments (`python -m bertfit.predict`)."""
    cli.main(["predict", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
