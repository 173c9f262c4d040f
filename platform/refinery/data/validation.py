"""Streaming validation of dataset files: JSONL, CSV and Parquet.

`validate_file` reads a file once, checks every row against its dataset kind,
hashes the bytes, counts the rows and gathers a preview and column statistics
(`refinery.data.inspect`); memory stays constant whatever the file size.
`iter_rows` streams the normalized rows of a file for later use.

A file is untrusted: a few hundred bytes of Parquet can decode to gigabytes
(one huge dictionary value repeated on every row). `DecodeLimits` bound what a
file may decode to in all, per value and per slice of rows held at once;
Parquet is read with its string columns kept dictionary-encoded, so sizes are
counted before any value is expanded. Uploads are validated in a child process
with a memory limit as well (`refinery.data.validate_child`).

Pure Python: no Django, no torch. pyarrow is imported only to read Parquet.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from trainers.dataset_kinds import BOOL, DATASET_KIND_SPECS, MESSAGES, TEXT

from refinery.core.units import format_bytes
from refinery.data.inspect import PREVIEW_ROWS, DatasetStats, preview_row

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_MAX_ERRORS = 20
DEFAULT_MAX_LINE_BYTES = 1_000_000
DEFAULT_MAX_DECODED_BYTES = 8 * 1024**3
DEFAULT_MAX_VALUE_BYTES = DEFAULT_MAX_LINE_BYTES  # a Parquet cell may hold what a JSONL line may
DEFAULT_MAX_BATCH_BYTES = 64 * 1024**2
DEFAULT_MAX_ROW_GROUP_BYTES = 2 * 1024**3
ROLES = ("system", "user", "assistant")

_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 1024


# --- issues --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationIssue:
    """One problem with a dataset file.

    `row` is 1-based: the line number in JSONL, the record number in CSV (the
    header being line 1), the row index + 1 in Parquet (`unit` says which
    word to show). It is None for problems with the whole file.
    """

    row: int | None
    field: str | None
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        return self.message if self.row is None else f"{self.unit} {self.row}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message, "unit": self.unit, "text": str(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationIssue:
        return cls(data["row"], data["field"], data["message"], data.get("unit", "line"))


@dataclass(frozen=True)
class DecodeLimits:
    """How far a dataset file may expand when it is read (decompression bombs stop here).

    `max_decoded_bytes`: the whole file, decoded (for JSONL and CSV, the file size).
    `max_value_bytes`: one Parquet cell decoded (a conversation counts whole).
    `max_batch_bytes`: the decoded rows turned into Python objects at once; no row may be larger.
    `max_row_group_bytes`: what a Parquet row group declares it decompresses to.
    """

    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_row_group_bytes: int = DEFAULT_MAX_ROW_GROUP_BYTES

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def decoded_size_message(limit: int) -> str:
    return f"the file decompresses to more than {limit:,} bytes ({format_bytes(limit)}), the limit per file"


class DatasetError(ValueError):
    """A dataset file that cannot be used; `issues` say why."""

    def __init__(self, *issues: ValidationIssue) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(str(issue) for issue in issues))


# --- dataset kinds -------------------------------------------------------------------------------

# Column types (trainers.dataset_kinds): TEXT must also be non-empty here; BOOL in CSV is the word true or
# false, in any case.

Problem = tuple[str | None, str]  # (field, message)


@dataclass(frozen=True)
class KindSpec:
    """The columns a dataset kind requires, and how to check a row of it."""

    name: str
    fields: Mapping[str, str]  # required field -> TEXT, MESSAGES or BOOL
    must_differ: tuple[str, str] | None = None  # two fields that may not hold the same value

    def check(self, row: Mapping[str, Any]) -> list[Problem]:
        problems: list[Problem] = []
        for name, field_type in self.fields.items():
            if name not in row:
                problems.append((name, f'missing required field "{name}"'))
            elif problem := _FIELD_CHECKS[field_type](name, row[name]):
                problems.append((name, problem))
        if self.must_differ and not problems:
            first, second = self.must_differ
            if row[first] == row[second]:
                problems.append((second, f'"{first}" and "{second}" are identical'))
        return problems


def _check_text(name: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f'field "{name}": expected a string, got {_json_type(value)}'
    if not value.strip():
        return f'field "{name}" is empty'
    return None


def _check_bool(name: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    shown = f" {_show(value)}" if isinstance(value, (str, int, float)) else ""
    return f'field "{name}": expected true or false, got {_json_type(value)}{shown}'


def _check_messages(name: str, value: Any) -> str | None:
    problem = _conversation_problem(value)
    return f'field "{name}": {problem}' if problem else None


def _conversation_problem(turns: Any) -> str | None:
    if not isinstance(turns, list):
        return f"expected a list of messages, got {_json_type(turns)}"
    if not turns:
        return "has no messages"
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, Mapping):
            return f"turn {number} is {_json_type(turn)} (expected an object with role and content)"
        if "role" not in turn:
            return f'turn {number} has no "role"'
        if turn["role"] not in ROLES:
            return f"turn {number} has role {_show(turn['role'])} (expected system, user or assistant)"
        if "content" not in turn:
            return f'turn {number} has no "content"'
        if not isinstance(turn["content"], str):
            return f'turn {number} has "content" of type {_json_type(turn["content"])} (expected a string)'
    roles = [turn["role"] for turn in turns]
    for required in ("user", "assistant"):
        if required not in roles:
            return f"has no {required} turn"
    if roles[-1] != "assistant":
        return f'ends with a "{roles[-1]}" turn (must end with an assistant turn)'
    return None


_FIELD_CHECKS: dict[str, Callable[[str, Any], str | None]] = {
    TEXT: _check_text,
    MESSAGES: _check_messages,
    BOOL: _check_bool,
}

KINDS: dict[str, KindSpec] = {
    kind.name: KindSpec(kind.name, kind.columns, must_differ=kind.must_differ) for kind in DATASET_KIND_SPECS.values()
}


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, as a user would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


# --- reading: shared pieces ----------------------------------------------------------------------


class _Record(NamedTuple):
    """One record as a reader produced it, before the kind checks."""

    number: int
    row: dict[str, Any] | None  # None when the record could not be read as a row
    problems: list[Problem]  # reading problems; when there are any the kind checks are skipped


class _Table(NamedTuple):
    columns: list[str] | None  # as declared by a CSV header or a Parquet schema
    records: Iterator[_Record]
    # Refuses a file that decodes to more than the limit, before its rows are read (Parquet).
    check_decoded_size: Callable[[], None] | None = None


def _text_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield (line number, text, problem) for each line of a byte stream.

    Reads at most `max_line_bytes` (+ the line break) at a time: the text of a
    longer line is None and the rest of it is skipped without being held in
    memory. A line that is not UTF-8 comes with a problem and its text decoded
    with replacement characters, so that a CSV parser can keep going.
    """
    limit = max_line_bytes + 2  # room for "\r\n"
    number = 0
    while line := stream.readline(limit):
        number += 1
        if len(line.rstrip(b"\r\n")) > max_line_bytes or (len(line) == limit and not line.endswith(b"\n")):
            _skip_rest_of_line(stream, line)
            yield number, None, f"longer than {max_line_bytes} bytes"
            continue
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        try:
            text, problem = line.decode("utf-8"), None
        except UnicodeDecodeError as error:
            text = line.decode("utf-8", errors="replace")
            problem = f"not valid UTF-8 (byte 0x{line[error.start]:02x} at position {error.start + 1})"
        yield number, text, problem


def _skip_rest_of_line(stream: BinaryIO, line: bytes) -> None:
    while line and not line.endswith(b"\n"):
        line = stream.readline(_CHUNK_BYTES)


def _parse_json(text: str) -> tuple[Any, str | None]:
    """(value, None), or (None, a description of why `text` is not JSON)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        where = f"column {error.colno}" if error.lineno == 1 else f"line {error.lineno} column {error.colno}"
        return None, f"invalid JSON ({error.msg} at {where})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply)"
    except ValueError as error:  # e.g. an integer longer than Python converts (4300 digits)
        return None, f"invalid JSON ({error})"


# --- JSONL ---------------------------------------------------------------------------------------


def _open_jsonl(stream: BinaryIO, kind: KindSpec, max_line_bytes: int, limits: DecodeLimits) -> _Table:
    return _Table(None, _jsonl_records(stream, max_line_bytes))


def _jsonl_records(stream: BinaryIO, max_line_bytes: int) -> Iterator[_Record]:
    for number, text, problem in _text_lines(stream, max_line_bytes):
        if problem is None:  # then there is text
            if not text.strip():
                continue  # blank lines are allowed
            value, problem = _parse_json(text)
            if problem is None and not isinstance(value, dict):
                problem = f"expected a JSON object, got {_json_type(value)}"
        if problem:
            yield _Record(number, None, [(None, problem)])
        else:
            yield _Record(number, value, [])


# --- CSV -----------------------------------------------------------------------------------------


class _LineTooLong(Exception):
    pass


class _CsvLines:
    """Decoded lines for `csv.reader`, remembering the first problem since `reset()`."""

    def __init__(self, stream: BinaryIO, max_line_bytes: int) -> None:
        self._lines = _text_lines(stream, max_line_bytes)
        self.problem: str | None = None

    def reset(self) -> None:
        self.problem = None

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        _number, text, problem = next(self._lines)
        if text is None:
            raise _LineTooLong(problem)
        self.problem = self.problem or problem
        return text


def _csv_records(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, list[str], str | None]]:
    """Yield (record number, cells, problem) for each CSV record, the header being record 1.

    A record that cannot be parsed, or a line that is too long, ends the file:
    the parser cannot tell where the next record starts.
    """
    # Cells may legitimately be as long as a line; the csv module's default cap is 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), max_line_bytes))
    lines = _CsvLines(stream, max_line_bytes)
    reader = csv.reader(lines, strict=True)
    number = 0
    while True:
        number += 1
        lines.reset()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _LineTooLong as error:
            raise DatasetError(ValidationIssue(number, None, str(error))) from None
        except csv.Error as error:
            reason = str(error).split(" - ")[0]  # drop the csv module's hint about newline modes
            raise DatasetError(ValidationIssue(number, None, f"malformed CSV ({reason})")) from None
        yield number, cells, lines.problem


def _open_csv(stream: BinaryIO, kind: KindSpec, max_line_bytes: int, limits: DecodeLimits) -> _Table:
    records = _csv_records(stream, max_line_bytes)
    number, cells, problem = next(records, (1, [], None))
    if problem:
        raise DatasetError(ValidationIssue(number, None, f"CSV header is {problem}"))
    header = [cell.strip() for cell in cells]
    _check_csv_header(header, kind)
    return _Table(header, _csv_rows(records, header, kind))


def _check_csv_header(header: list[str], kind: KindSpec) -> None:
    if not any(header):
        raise DatasetError(ValidationIssue(1, None, "CSV header is empty"))
    issues = []
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name:
            issues.append(ValidationIssue(None, None, f"CSV header has no name for column {position}"))
        elif name in seen:
            issues.append(ValidationIssue(None, name, f'CSV header has duplicate column "{name}"'))
        seen.add(name)
    for name in kind.fields:
        if name not in seen:
            issues.append(ValidationIssue(None, name, f'CSV header is missing column "{name}"'))
    if issues:
        raise DatasetError(*issues)


def _csv_rows(
    records: Iterator[tuple[int, list[str], str | None]], header: list[str], kind: KindSpec
) -> Iterator[_Record]:
    json_fields = [name for name, field_type in kind.fields.items() if field_type == MESSAGES]
    bool_fields = [name for name, field_type in kind.fields.items() if field_type == BOOL]
    for number, cells, problem in records:
        if problem:
            yield _Record(number, None, [(None, problem)])
            continue
        if not cells:
            continue  # blank line
        if len(cells) != len(header):
            message = f"expected {len(header)} cells (one per header column), got {len(cells)}"
            yield _Record(number, None, [(None, message)])
            continue
        row: dict[str, Any] = dict(zip(header, cells, strict=True))
        problems: list[Problem] = []
        for name in json_fields:  # conversations are JSON text inside a cell
            value, problem = _parse_json(row[name])
            if problem:
                problems.append((name, f'field "{name}": {problem}'))
            else:
                row[name] = value
        for name in bool_fields:  # CSV has no booleans: the words true and false stand for them
            word = row[name].strip().lower()
            if word in ("true", "false"):
                row[name] = word == "true"
        yield _Record(number, row, problems)


# --- Parquet -------------------------------------------------------------------------------------


def _open_parquet(stream: BinaryIO, kind: KindSpec, max_line_bytes: int, limits: DecodeLimits) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # No pre-buffering: it would keep every column chunk read so far in memory.
        parquet = pq.ParquetFile(stream, pre_buffer=False, buffer_size=_CHUNK_BYTES)
    except (pa.ArrowException, OSError) as error:
        raise DatasetError(ValidationIssue(None, None, f"not a Parquet file or truncated ({error})")) from None
    schema = parquet.schema_arrow
    issues = [
        ValidationIssue(None, name, problem)
        for name, field_type in kind.fields.items()
        if (problem := _parquet_column_problem(schema, name, field_type))
    ]
    if issues:
        raise DatasetError(*issues)
    batch_rows = _parquet_batch_rows(parquet.metadata, limits)
    # Strings stay dictionary-encoded as Arrow reads them: a value repeated on a million rows is
    # held once, and its decoded size is counted before any row is expanded into Python objects.
    byte_columns = [column.path for column in parquet.schema if column.physical_type == "BYTE_ARRAY"]
    parquet = pq.ParquetFile(stream, pre_buffer=False, buffer_size=_CHUNK_BYTES, read_dictionary=byte_columns or None)
    return _Table(
        list(schema.names),
        _parquet_records(parquet, batch_rows, limits),
        lambda: _parquet_decoded_size_check(parquet, batch_rows, limits),
    )


def _parquet_batch_rows(metadata: Any, limits: DecodeLimits) -> int:
    """Rows per record batch: few enough that a batch declares at most `max_batch_bytes`.

    Refuses a file whose row groups declare more than `max_row_group_bytes`, or
    more than `max_decoded_bytes` in all, before any data page is read.
    """
    rows, declared_total = _PARQUET_BATCH_ROWS, 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        declared = sum(group.column(column).total_uncompressed_size for column in range(group.num_columns))
        if declared > limits.max_row_group_bytes:
            message = (
                f"row group {index + 1} decompresses to {declared:,} bytes, more than the limit of "
                f"{limits.max_row_group_bytes:,} bytes ({format_bytes(limits.max_row_group_bytes)}) per row group; "
                f"write the file with smaller row groups"
            )
            raise DatasetError(ValidationIssue(None, None, message))
        declared_total += declared
        if group.num_rows > 0:
            per_row = -(-declared // group.num_rows)
            rows = min(rows, max(1, limits.max_batch_bytes // max(1, per_row)))
    if declared_total > limits.max_decoded_bytes:
        raise DatasetError(ValidationIssue(None, None, decoded_size_message(limits.max_decoded_bytes)))
    return rows


def _parquet_column_problem(schema: pa.Schema, name: str, field_type: str) -> str | None:
    if schema.get_field_index(name) < 0:
        return f'Parquet file is missing column "{name}"'
    arrow_type = schema.field(name).type
    if field_type == TEXT:
        ok, expected = _is_arrow_string(arrow_type), "string"
    elif field_type == BOOL:
        ok, expected = _is_arrow_bool(arrow_type), "bool"
    else:
        ok, expected = _is_arrow_conversation(arrow_type), "list<struct<role: string, content: string>>"
    return None if ok else f'column "{name}" has type {arrow_type} (expected {expected})'


def _is_arrow_string(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type)


def _is_arrow_bool(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_boolean(arrow_type)


def _is_arrow_conversation(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        return False
    turn = arrow_type.value_type
    return (
        pa.types.is_struct(turn)
        and all(turn.get_field_index(key) >= 0 for key in ("role", "content"))
        and all(_is_arrow_string(turn.field(key).type) for key in ("role", "content"))
    )


def _parquet_batches(parquet: Any, batch_rows: int) -> Iterator[Any]:
    """The file's record batches; Arrow's errors become DatasetError, running out of memory stays MemoryError."""
    import pyarrow as pa

    batches = parquet.iter_batches(batch_size=batch_rows, use_threads=False)
    rows_read = 0
    while True:
        try:
            batch = next(batches, None)
        except MemoryError:  # pa.ArrowMemoryError is one too: the caller says which limit was hit
            raise
        except (pa.ArrowException, OSError) as error:
            message = f"Parquet data unreadable after row {rows_read} ({error})"
            raise DatasetError(ValidationIssue(None, None, message)) from None
        if batch is None:
            return
        rows_read += batch.num_rows
        yield batch


def _parquet_decoded_size_check(parquet: Any, batch_rows: int, limits: DecodeLimits) -> None:
    """Count what the whole file decodes to, without expanding a value; DatasetError past the limit.

    Cheap next to validating the rows (dictionary indices are summed, no Python objects are
    made), so a bomb is refused in moments instead of after decoding gigabytes.
    """
    decoded = 0
    for batch in _parquet_batches(parquet, batch_rows):
        for column in batch.columns:
            decoded += _sum(_row_bytes(column))
        if decoded > limits.max_decoded_bytes:
            raise DatasetError(ValidationIssue(None, None, decoded_size_message(limits.max_decoded_bytes)))


def _parquet_records(parquet: Any, batch_rows: int, limits: DecodeLimits) -> Iterator[_Record]:
    """The rows of the file, turned into Python objects a slice of at most `max_batch_bytes` at a time.

    A cell over `max_value_bytes`, or a row over `max_batch_bytes`, is a problem of that row
    and is never expanded; past `max_decoded_bytes` in all, reading stops.
    """
    number = decoded = 0
    for batch in _parquet_batches(parquet, batch_rows):
        per_column = [_row_bytes(column) for column in batch.columns]
        too_long = [
            (name, sizes.to_pylist())
            for name, sizes in zip(batch.schema.names, per_column, strict=True)
            if _max(sizes) > limits.max_value_bytes
        ]
        row_sizes = _add_all(per_column, batch.num_rows).to_pylist()
        decoded += sum(row_sizes)
        if decoded > limits.max_decoded_bytes:
            raise DatasetError(ValidationIssue(None, None, decoded_size_message(limits.max_decoded_bytes)))
        start = held = 0
        for index, size in enumerate(row_sizes):
            problems = [
                (
                    name,
                    f'field "{name}" decodes to {sizes[index]:,} bytes, more than the limit of '
                    f"{limits.max_value_bytes:,} bytes per value",
                )
                for name, sizes in too_long
                if sizes[index] > limits.max_value_bytes
            ]
            if not problems and size > limits.max_batch_bytes:
                message = (
                    f"the row decodes to {size:,} bytes, more than the limit of {limits.max_batch_bytes:,} per row"
                )
                problems = [(None, message)]
            if problems or (held + size > limits.max_batch_bytes and index > start):
                for row in _python_rows(batch.slice(start, index - start), number):
                    number += 1
                    yield _Record(number, row, [])
                start, held = index, 0
            if problems:
                number += 1
                yield _Record(number, None, problems)
                start = index + 1
                continue
            held += size
        for row in _python_rows(batch.slice(start), number):
            number += 1
            yield _Record(number, row, [])


def _python_rows(rows: pa.RecordBatch, rows_before: int) -> list[dict[str, Any]]:
    import pyarrow as pa

    try:
        return rows.to_pylist()
    except UnicodeDecodeError:
        message = f"Parquet data unreadable after row {rows_before} (a string column holds bytes that are not UTF-8)"
    except pa.ArrowException as error:
        message = f"Parquet data unreadable after row {rows_before} ({error})"
    raise DatasetError(ValidationIssue(None, None, message))


def _row_bytes(array: pa.Array) -> pa.Array:
    """What each row of an Arrow array decodes to, in bytes (int64, nulls count 0).

    Strings count their bytes; a dictionary-encoded value counts its value's size on every row
    that uses it; lists, maps and structs count what they hold; other types their width.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if isinstance(array, pa.ExtensionArray):
        return _row_bytes(array.storage)
    if pa.types.is_dictionary(kind):
        return pc.take(_row_bytes(array.dictionary), array.indices).fill_null(0)
    if pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        array = array.cast(pa.large_binary())
        kind = array.type
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        return pc.binary_length(array).cast(pa.int64()).fill_null(0)
    if isinstance(array, (pa.ListArray, pa.LargeListArray)):  # a MapArray is a ListArray of key-value structs
        return _segment_sums(_row_bytes(array.values), array.offsets)
    if isinstance(array, pa.FixedSizeListArray):  # `values` is the whole child, as for lists
        size, first = kind.list_size, array.offset
        offsets = pa.array(range(first * size, (first + len(array) + 1) * size, size), pa.int64())
        sums = _segment_sums(_row_bytes(array.values), offsets)
        return pc.if_else(array.is_null(), 0, sums)
    if isinstance(array, pa.StructArray):
        return _add_all([_row_bytes(field) for field in array.flatten()], len(array))
    if pa.types.is_null(kind):
        return pa.repeat(0, len(array)).cast(pa.int64())
    try:
        width = max(1, kind.bit_width // 8)
    except ValueError:  # no fixed width (unions, list views): spread what the array holds over its rows
        width = -(-array.nbytes // max(1, len(array)))
    return pa.repeat(width, len(array)).cast(pa.int64())


def _segment_sums(values: pa.Array, offsets: pa.Array) -> pa.Array:
    """Per list row, the sum of `values[offsets[i]:offsets[i + 1]]`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    running = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(values)])
    offsets = offsets.cast(pa.int64())
    ends = pc.take(running, offsets.slice(1))
    starts = pc.take(running, offsets.slice(0, len(offsets) - 1))
    return pc.subtract(ends, starts)


def _add_all(arrays: list[pa.Array], length: int) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    total = pa.repeat(0, length).cast(pa.int64())
    for array in arrays:
        total = pc.add(total, array)
    return total


def _sum(array: pa.Array) -> int:
    import pyarrow.compute as pc

    return pc.sum(array).as_py() or 0


def _max(array: pa.Array) -> int:
    import pyarrow.compute as pc

    return pc.max(array).as_py() or 0


# --- formats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileFormat:
    name: str
    extensions: tuple[str, ...]
    open: Callable[[BinaryIO, KindSpec, int, DecodeLimits], _Table]
    unit: str = "line"  # what a record number counts, in messages
    random_access: bool = False  # the reader seeks (Parquet reads its footer first)


FORMATS: dict[str, FileFormat] = {
    fmt.name: fmt
    for fmt in (
        FileFormat("jsonl", (".jsonl", ".json", ".ndjson"), _open_jsonl),
        FileFormat("csv", (".csv",), _open_csv),
        FileFormat("parquet", (".parquet",), _open_parquet, unit="row", random_access=True),
    )
}


def detect_format(filename: str | Path) -> str:
    """The dataset format of a file, from its extension; DatasetError for any other extension."""
    suffix = Path(filename).suffix.lower()
    for fmt in FORMATS.values():
        if suffix in fmt.extensions:
            return fmt.name
    extensions = ", ".join(extension for fmt in FORMATS.values() for extension in fmt.extensions)
    name = Path(filename).name
    message = f'cannot tell the format of "{name}" from its extension (expected one of {extensions})'
    raise DatasetError(ValidationIssue(None, None, message))


def _lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f'unknown dataset {what} "{name}" (expected one of {", ".join(table)})')
    return table[name]


def _check_size(stream: BinaryIO, fmt: FileFormat, limits: DecodeLimits) -> None:
    size = os.fstat(stream.fileno()).st_size
    if size == 0:
        raise DatasetError(ValidationIssue(None, None, "file is empty"))
    if not fmt.random_access and size > limits.max_decoded_bytes:  # text decodes to its own size
        raise DatasetError(ValidationIssue(None, None, decoded_size_message(limits.max_decoded_bytes)))


# --- the report ----------------------------------------------------------------------------------


@dataclass
class ValidationReport:
    format: str
    kind: str
    row_count: int  # records read (blank lines aside), valid or not
    error_count: int  # all problems found; `issues` keeps the first few
    issues: list[ValidationIssue]
    sha256: str
    size_bytes: int
    columns: list[str]
    preview: list[dict[str, Any]]  # the first rows that parsed (valid or not), values cut short for display
    stats: dict[str, dict[str, Any]]  # per column over the valid rows, see refinery.data.inspect.ColumnStats

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "format": self.format,
            "kind": self.kind,
            "row_count": self.row_count,
            "error_count": self.error_count,
            "issues": [issue.to_dict() for issue in self.issues],
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "columns": list(self.columns),
            "preview": self.preview,
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationReport:
        fields = {key: value for key, value in data.items() if key != "ok"}
        fields["issues"] = [ValidationIssue.from_dict(issue) for issue in data["issues"]]
        return cls(**fields)


class _HashingReader:
    """A binary reader that feeds every byte it hands out into a sha256."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self._drained = False
        self.size = 0

    def readline(self, limit: int = -1) -> bytes:
        return self._hashed(self._raw.readline(limit))

    def read(self, size: int = -1) -> bytes:
        return self._hashed(self._raw.read(size))

    def fileno(self) -> int:
        return self._raw.fileno()

    def drain(self) -> None:
        """Hash whatever has not been read yet; once drained, the file counts as hashed whole."""
        while not self._drained:
            self._drained = not self.read(_CHUNK_BYTES)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

    def _hashed(self, data: bytes) -> bytes:
        self._sha256.update(data)
        self.size += len(data)
        return data


@dataclass
class _ReportBuilder:
    fmt: FileFormat
    kind: KindSpec
    max_errors: int
    columns: list[str] | None = None
    row_count: int = 0
    error_count: int = 0
    issues: list[ValidationIssue] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)
    stats: DatasetStats = field(default_factory=DatasetStats)

    def add_record(self, record: _Record) -> None:
        self.row_count += 1
        if record.row is not None and len(self.preview) < PREVIEW_ROWS:
            self.preview.append(preview_row(record.row))
        problems = _problems(record, self.kind)
        for field_name, message in problems:
            self.add_issue(ValidationIssue(record.number, field_name, message, self.fmt.unit))
        if not problems:
            self.stats.observe(record.row)

    def add_issue(self, issue: ValidationIssue) -> None:
        self.error_count += 1
        if len(self.issues) < self.max_errors:
            self.issues.append(issue)

    def build(self, *, sha256: str, size_bytes: int) -> ValidationReport:
        if self.row_count == 0 and self.error_count == 0:
            self.add_issue(ValidationIssue(None, None, "file has no data rows"))
        return ValidationReport(
            format=self.fmt.name,
            kind=self.kind.name,
            row_count=self.row_count,
            error_count=self.error_count,
            issues=self.issues,
            sha256=sha256,
            size_bytes=size_bytes,
            columns=self.columns if self.columns is not None else self.stats.columns,
            preview=self.preview,
            stats=self.stats.to_dict(),
        )


def _problems(record: _Record, kind: KindSpec) -> list[Problem]:
    return record.problems or kind.check(record.row)  # a record without a row always has problems


# --- public entry points -------------------------------------------------------------------------


def validate_file(
    path: str | Path,
    *,
    format: str,
    kind: str,
    max_errors: int = DEFAULT_MAX_ERRORS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_rows: int | None = None,
    limits: DecodeLimits | None = None,
) -> ValidationReport:
    """Check a dataset file of `format` (jsonl, csv, parquet) holding rows of `kind`.

    Reads the file once in constant memory. The report keeps the first
    `max_errors` issues and counts all of them. A line longer than
    `max_line_bytes` is an error; so is a file with more than `max_rows`
    rows (reading stops there), and one that decodes to more than `limits`
    allow (Parquet is measured before its rows are read). The sha256 always
    covers the whole file.
    """
    limits = limits or DecodeLimits()
    fmt: FileFormat = _lookup(FORMATS, format, "format")
    spec: KindSpec = _lookup(KINDS, kind, "kind")
    report = _ReportBuilder(fmt, spec, max_errors)
    with open(path, "rb") as raw:
        stream = _HashingReader(raw)
        if fmt.random_access:  # hash in a pass of its own, then let the reader seek
            stream.drain()
            raw.seek(0)
        try:
            _check_size(raw, fmt, limits)
            table = fmt.open(raw if fmt.random_access else stream, spec, max_line_bytes, limits)
            report.columns = table.columns
            if table.check_decoded_size is not None:
                table.check_decoded_size()
            for record in table.records:
                if max_rows is not None and report.row_count >= max_rows:
                    report.add_issue(ValidationIssue(None, None, f"file has more than {max_rows} rows (the limit)"))
                    break
                report.add_record(record)
        except DatasetError as error:
            for issue in error.issues:
                report.add_issue(issue)
        stream.drain()
    return report.build(sha256=stream.hexdigest(), size_bytes=stream.size)


def iter_rows(
    path: str | Path,
    format: str,
    kind: str,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    limits: DecodeLimits | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the rows of a dataset file as dicts, extra columns included.

    Rows are normalized: a CSV cell holding a conversation is parsed from
    JSON. Raises DatasetError at the first problem, so a file that passed
    `validate_file` (with the same limits) streams through whole.
    """
    fmt: FileFormat = _lookup(FORMATS, format, "format")
    spec: KindSpec = _lookup(KINDS, kind, "kind")
    limits = limits or DecodeLimits()
    with open(path, "rb") as stream:
        _check_size(stream, fmt, limits)
        for record in fmt.open(stream, spec, max_line_bytes, limits).records:
            if problems := _problems(record, spec):
                raise DatasetError(
                    *(ValidationIssue(record.number, field_name, message, fmt.unit) for field_name, message in problems)
                )
            yield record.row
