"""Loading a task's documents: `--data-dir DIR/<file>.jsonl` (Hub schema) offline, else the Hub dataset.

Documents keep file order, so `doc_id` = 0-based index in the evaluated split. Missing files and fields raise
`DataError` naming the task, the file and the fields expected.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .tasks.base import DataSource, Task


class DataError(ValueError):
    """A task's data is missing or lacks the fields the task reads."""


def _read_jsonl(path: str, task: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"task {task!r}: {path} line {lineno} is not valid JSON ({err}).") from err
    return rows


def _read_text(path: str) -> list[dict[str, Any]]:
    # A plain text file: documents are separated by blank lines.
    with open(path, encoding="utf-8") as fh:
        chunks = [c.strip("\n") for c in fh.read().split("\n\n")]
    return [{"text": c} for c in chunks if c.strip()]


def _check_fields(rows: list[dict[str, Any]], fields: tuple[str, ...], task: str, where: str) -> None:
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise DataError(
                f"task {task!r}: {where} row {i} lacks field(s) {missing}; every row needs {list(fields)} "
                "(the Hugging Face dataset's schema)."
            )


def _load_hub(source: DataSource, split: str, task: str) -> list[dict[str, Any]]:
    import datasets

    configs = source.hub_name if isinstance(source.hub_name, tuple) else (source.hub_name,)
    try:  # several configs (MATH's subjects) are concatenated in order
        rows = [dict(r) for name in configs for r in datasets.load_dataset(source.hub_path, name, split=split)]
    except Exception as err:  # offline, gated, renamed: say what to do instead
        raise DataError(
            f"task {task!r}: could not load {source.hub_path} ({source.hub_name}) split {split!r} from the Hub "
            f"({type(err).__name__}: {err}). Offline, pass --data-dir DIR holding {source.file} "
            f"with fields {list(source.fields)}."
        ) from err
    return rows


def load_split(task: Task, data_dir: str | None, fewshot: bool = False) -> list[dict[str, Any]]:
    """The task's evaluated documents (or its few-shot pool), unprocessed, in file order."""
    source = task.source
    file = source.fewshot_file if fewshot else source.file
    split = source.fewshot_split if fewshot else source.split
    if data_dir is not None:
        if file is None:
            raise DataError(f"task {task.name!r} has no few-shot split; use --num-fewshot 0.")
        path = os.path.join(data_dir, file)
        text_path = os.path.splitext(path)[0] + ".txt"
        rolling = task.output_type == "loglikelihood_rolling"
        if not os.path.isfile(path) and os.path.isfile(text_path) and rolling:
            return _read_text(text_path)
        if not os.path.isfile(path) and rolling:
            raise DataError(f"task {task.name!r}: neither {path} (JSON lines with a 'text' field) nor {text_path} "
                            "(plain text, documents separated by blank lines) exists.")
        if not os.path.isfile(path):
            what = "few-shot pool" if fewshot else "documents"
            raise DataError(
                f"task {task.name!r}: {what} file {path} not found; it must be JSON lines with fields "
                f"{list(source.fields)} (the schema of {source.hub_path}, split {split!r})."
            )
        rows = _read_jsonl(path, task.name)
        _check_fields(rows, source.fields, task.name, path)
        return rows
    if split is None:
        raise DataError(f"task {task.name!r} has no few-shot split on the Hub; use --num-fewshot 0.")
    rows = _load_hub(source, split, task.name)
    _check_fields(rows, source.fields, task.name, f"{source.hub_path}[{split}]")
    return rows


def load_docs(task: Task, data_dir: str | None, fewshot: bool = False) -> list[dict[str, Any]]:
    """Documents after the task's `process_docs` (what prompts are built from)."""
    rows = load_split(task, data_dir, fewshot)
    return task.process_docs(rows) if task.process_docs else rows
