"""bertfit add-task: register a file of labelled texts as the target task, then print the plan.

    bertfit add-task reviews data_raw/reviews.csv --text-column review --label-column sentiment
    bertfit add-task tickets data_raw/train.jsonl --validation data_raw/dev.jsonl \\
        --test data_raw/test.jsonl --label-column queue

CSV, TSV, JSONL (.gz) or Parquet, chosen by the file's ending. The file is read once: its columns
are shown, then it goes through collect's own checks (the same readers and messages: ragged rows,
encodings, empty texts, missing labels, labels of validation/test unseen in train), so a file
this command accepts is one `dvc repro` will read. Splits missing from the files are carved out
of train (--validation-ratio, --test-ratio; stratified, identical texts kept together).

Then it writes the task into the catalogue (tasks.yaml: comments kept), sets `target` in
params.yaml, tracks the files with DVC (`dvc add`, when they lie inside the project and are not
tracked yet; DVC stages the .dvc files in git), and prints the plan with its estimated wall time
on this machine (`bertfit plan`) and the command to run next.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bertfit import plan
from bertfit.reporting import write_text

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the task's name: a lowercase identifier, e.g. reviews")
    parser.add_argument("file", type=Path, help="the train file (or the only file)")
    parser.add_argument("--text-column", default="text", help="column of the texts (default: text)")
    parser.add_argument(
        "--label-column", default="label", help="column of the labels (default: label)"
    )
    parser.add_argument(
        "--text-pair-column", default=None, help="column of the second texts of sentence pairs"
    )
    parser.add_argument("--validation", type=Path, default=None, help="a validation file")
    parser.add_argument("--test", type=Path, default=None, help="a test file")
    parser.add_argument(
        "--validation-ratio",
        type=float,
        default=0.1,
        help="share of the labelled rows carved out as validation when no file gives it "
        "(default: 0.1)",
    )
    parser.add_argument(
        "--test-ratio",
        type=float,
        default=0.1,
        help="share carved out as test when no file gives it (default: 0.1)",
    )
    parser.add_argument("--domain", default=None, help="the task's domain (default: its name)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    parser.add_argument(
        "--replace", action="store_true", help="replace a catalogue task of the same name"
    )
    parser.add_argument("--no-dvc", action="store_true", help="do not `dvc add` the files")
    plan.add_arguments(parser)  # --params, --no-measure: the plan it prints


def run(args: argparse.Namespace) -> None:
    from bertfit.cli import configure_logging

    os.environ.setdefault("BERTFIT_LOG_LEVEL", "WARNING")  # the plan is the output
    configure_logging()
    print(add_task(args))


def relative_to_root(path: Path, root: Path) -> str:
    """The path as the catalogue writes it: relative to the project root (also `../x`)."""
    return os.path.relpath(path.resolve(), root.resolve())


def column_lines(table: Any, path: Path) -> list[str]:
    """What the file holds: its rows and, per column, its type and a first value."""
    lines = [f"{path}: {len(table):,} rows, {len(table.columns)} columns"]
    for column in table.columns:
        values = table[column].dropna()
        first = str(values.iloc[0]) if len(values) else ""
        first = first if len(first) <= 50 else first[:47] + "..."
        lines.append(f"  {column!s:<20} {first!r}")
    return lines


def check_columns(table: Any, path: Path, args: argparse.Namespace) -> None:
    """The columns asked for are there, or one message with the flags that fix it."""
    wanted = {"--text-column": args.text_column, "--label-column": args.label_column}
    if args.text_pair_column:
        wanted["--text-pair-column"] = args.text_pair_column
    missing = {flag: c for flag, c in wanted.items() if c not in table.columns}
    if missing:
        asked = ", ".join(f"{flag} {c!r}" for flag, c in missing.items())
        raise ValueError(
            f"{path}: no column {asked}; the file's columns are {list(table.columns)}. Name the "
            f"right ones, e.g. --text-column {table.columns[0]} --label-column {table.columns[-1]}"
        )


def task_entry(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The catalogue entry: a `files` source, with split shares for the splits no file gives."""
    source: dict[str, Any] = {"kind": "files", "train": relative_to_root(args.file, root)}
    for split in ("validation", "test"):
        path = getattr(args, split)
        source[split] = None if path is None else relative_to_root(path, root)
    source |= {"text_column": args.text_column, "label_column": args.label_column}
    if args.text_pair_column:
        source["text_pair_column"] = args.text_pair_column
    if args.encoding != "utf-8":
        source["encoding"] = args.encoding
    entry: dict[str, Any] = {"domain": args.domain or args.name, "source": source}
    if args.validation is None or args.test is None:
        entry["split"] = {
            "validation_ratio": args.validation_ratio,
            "test_ratio": args.test_ratio,
        }
    return entry


def catalogue_file(params_file: Path, params: dict[str, Any]) -> Path:
    """The catalogue file params.yaml names (`tasks: tasks.yaml`)."""
    tasks = params.get("tasks")
    if not isinstance(tasks, str):
        raise ValueError(
            f"{params_file}: the task catalogue is written inline (`tasks:` holds the tasks); "
            "bertfit add-task writes to a catalogue file (`tasks: tasks.yaml`): add the task "
            "there by hand, or move the catalogue into a file"
        )
    return params_file.parent / tasks


TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:", re.MULTILINE)
TARGET_LINE = re.compile(r"^target:[ \t]*[^#\n]*?([ \t]*#.*)?$", re.MULTILINE)


def without_task(text: str, name: str) -> str:
    """The catalogue's text less task `name`'s block (its key line to the next top-level key)."""
    keys = list(TOP_LEVEL_KEY.finditer(text))
    for i, key in enumerate(keys):
        if key.group(1) == name:
            end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
            return text[: key.start()] + text[end:]
    return text


def entry_text(name: str, entry: dict[str, Any], comment: str) -> str:
    """The entry as YAML after a comment line, the split shares on one line as tasks.yaml
    writes its own."""
    split = entry.get("split")
    body = {k: v for k, v in entry.items() if k != "split"}
    text = yaml.safe_dump({name: body}, sort_keys=False, default_flow_style=False, width=100)
    if split is not None:
        shares = ", ".join(f"{k}: {v}" for k, v in split.items())
        text += f"  split: {{{shares}}}\n"
    return f"# {comment}\n{text}"


def write_text_atomic(path: Path, text: str) -> None:
    write_text(path, text)


def register(
    params_file: Path, name: str, entry: dict[str, Any], comment: str, replace: bool
) -> Path:
    """Append the entry to the catalogue file and set `target: name` in params.yaml; return the
    catalogue's path. Both are edited as text, so every other line (comments, layout) stays as
    it was; they are read back through the params checks, and restored if that fails."""
    from bertfit.params import read_params_file

    params_text = params_file.read_text(encoding="utf-8")
    where = catalogue_file(params_file, yaml.safe_load(params_text))
    old_catalogue = catalogue_text = where.read_text(encoding="utf-8")
    if name in (yaml.safe_load(catalogue_text) or {}):
        if not replace:
            raise ValueError(
                f"{where}: a task named {name!r} is already in the catalogue; choose another "
                "name, or --replace to replace it"
            )
        catalogue_text = without_task(catalogue_text, name)
    if not TARGET_LINE.search(params_text):
        raise ValueError(f"{params_file}: no top-level `target:` line to set")
    new_params = TARGET_LINE.sub(
        lambda m: f"target: {name}{m.group(1) or ''}", params_text, count=1
    )
    write_text_atomic(where, catalogue_text.rstrip("\n") + "\n" + entry_text(name, entry, comment))
    write_text_atomic(params_file, new_params)
    try:
        read_params_file(params_file)
    except ValueError:
        write_text_atomic(where, old_catalogue)
        write_text_atomic(params_file, params_text)
        raise
    return where


def track_with_dvc(files: list[Path], root: Path) -> list[str]:
    """`dvc add` each file inside the project that neither git nor DVC tracks yet; a line each
    about what was done."""
    from bertfit.review import dvc_command

    lines = []
    for path in files:
        rel = relative_to_root(path, root)
        if rel.startswith(".."):
            lines.append(
                f"{rel}: outside the project, not tracked by DVC (collect fingerprints it)"
            )
            continue
        if Path(root / f"{rel}.dvc").is_file():
            lines.append(f"{rel}: already tracked by DVC ({rel}.dvc)")
            continue
        in_git = subprocess.run(
            ["git", "ls-files", "--error-unmatch", rel], cwd=root, capture_output=True
        )
        if in_git.returncode == 0:
            lines.append(f"{rel}: already in git, left there")
            continue
        done = subprocess.run(
            [*dvc_command(), "add", "--quiet", rel], cwd=root, capture_output=True, text=True
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise ValueError(
                f"`dvc add {rel}` failed: {detail[-1] if detail else done.returncode}; track it "
                "yourself, or rerun with --no-dvc"
            )
        lines.append(f"{rel}: tracked by DVC ({rel}.dvc, staged in git)")
    return lines


def add_task(args: argparse.Namespace) -> str:
    """Check the files as collect would, register the task, track the files, plan the run."""
    from datetime import date

    from bertfit.data.collect import read_and_prepare
    from bertfit.data.sources import project_root, read_table
    from bertfit.params import TaskSpec, parse_section, read_params_file

    name = args.name
    if not (name.isidentifier() and name == name.lower()):
        raise ValueError(
            f"task name {name!r} must be a lowercase identifier (letters, digits, _), e.g. "
            f"{''.join(c if c.isalnum() else '_' for c in name.lower()).strip('_') or 'mytask'}"
        )
    params_file = args.params
    data = read_params_file(params_file)  # a broken params file is refused before any write
    root = project_root(params_file.resolve().parent)
    files = [p for p in (args.file, args.validation, args.test) if p is not None]
    tables, out = {}, []
    for path in files:
        table = read_table(path, args.encoding, name)
        check_columns(table, path, args)
        tables[root / relative_to_root(path, root)] = table
        out += column_lines(table, path)
    entry = task_entry(args, root)
    try:
        spec = TaskSpec.model_validate(entry)
    except Exception as err:  # pydantic's message names the field: --validation-ratio etc.
        raise ValueError(f"bertfit add-task {name}: {err}") from None
    collect = parse_section(data, "collect", str(params_file))
    prepared = read_and_prepare(name, spec, collect, root, tables)
    comment = f"added by `bertfit add-task` on {date.today().isoformat()}"
    where = register(params_file, name, entry, comment, args.replace)
    out += ["", f"{where}: task {name} added; {params_file}: target: {name}"]
    if not args.no_dvc:
        out += track_with_dvc(files, root)
    made = plan.make_plan(params_file, measure=not args.no_measure, prepared={name: prepared})
    out += ["", made.text()]
    out += [
        f"(to keep it: git add {relative_to_root(where, root)} "
        f"{relative_to_root(params_file, root)} && git commit)"
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """`bertfit add-task ARGS` (`python -m bertfit.add_task`)."""
    from bertfit import cli

    cli.main(["add-task", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
