"""Reading stage data files (jsonl, csv, parquet) into checked rows and Hugging Face datasets.

Files are read directly (no ``datasets.load_dataset``): nothing is cached on disk and
nothing is fetched from a hub. Each row is checked against its kind's columns and extra
columns are dropped, so every error names the file, the row and the column.
"""

import csv
import json
from typing import Any

from .dataset_kinds import BOOL, DATASET_KIND_SPECS, MESSAGES
from .stage_spec import DataFile

__all__ = ["KIND_COLUMNS", "DataError", "read_raw_rows", "read_rows", "load_dataset"]

KIND_COLUMNS = {spec.name: tuple(spec.columns) for spec in DATASET_KIND_SPECS.values()}


class DataError(ValueError):
    pass


def read_raw_rows(file: DataFile) -> list[dict[str, Any]]:
    """The file's rows as dicts, unchecked (``file.kind`` is not used)."""
    if file.format == "jsonl":
        rows = []
        with open(file.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{file.path}: line {number} is not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{file.path}: line {number} is not a JSON object")
                rows.append(row)
        return rows
    if file.format == "csv":
        with open(file.path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    if file.format == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(file.path).to_pylist()
    raise DataError(f"{file.path}: unsupported format {file.format!r}")


def _check_messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):  # csv stores messages as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: 'messages' is not valid JSON") from None
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise DataError(f"{where}: message {i} must be an object with a string 'role'")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: message {i} must have a string 'content'")
        messages.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: 'messages' has no assistant turn to learn from")
    return messages


def _check_bool(value: Any, column: str, where: str, *, from_csv: bool) -> bool:
    if from_csv and isinstance(value, str) and value.strip().lower() in ("true", "false"):  # csv has no booleans
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise DataError(f"{where}: {column!r} must be true or false, got {value!r}")
    return value


def read_rows(file: DataFile) -> list[dict[str, Any]]:
    """The file's rows, reduced to the kind's columns and checked; DataError names the first bad row."""
    if file.kind not in KIND_COLUMNS:
        raise DataError(f"{file.path}: unknown data kind {file.kind!r}")
    types = DATASET_KIND_SPECS[file.kind].columns
    columns = KIND_COLUMNS[file.kind]
    rows = []
    for number, raw in enumerate(read_raw_rows(file), start=1):
        where = f"{file.path}: row {number}"
        missing = [c for c in columns if c not in raw or raw[c] is None]
        if missing:
            raise DataError(f"{where}: missing column {missing[0]!r} (a {file.kind} row needs {', '.join(columns)})")
        row = {}
        for column in columns:
            if types[column] == MESSAGES:
                row[column] = _check_messages(raw[column], where)
            elif types[column] == BOOL:  # true/false; csv spells them as the words true or false
                row[column] = _check_bool(raw[column], column, where, from_csv=file.format == "csv")
            elif not isinstance(raw[column], str):
                raise DataError(f"{where}: {column!r} must be a string, got {type(raw[column]).__name__}")
            else:
                row[column] = raw[column]
        rows.append(row)
    if not rows:
        raise DataError(f"{file.path}: no rows")
    return rows


def load_dataset(file: DataFile):
    """The file as an in-memory ``datasets.Dataset``."""
    from datasets import Dataset

    return Dataset.from_list(read_rows(file))
