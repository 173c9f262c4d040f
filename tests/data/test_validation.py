"""Streaming dataset validation: refinery.data.validation (and the stats/preview of refinery.data.inspect)."""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.data.validation import (
    DatasetError,
    ValidationIssue,
    ValidationReport,
    detect_format,
    iter_rows,
    validate_file,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]

VALID_ROWS: dict[str, list[dict[str, Any]]] = {
    "prompt_completion": [
        {"prompt": "2+2=", "completion": "4", "source": "math"},
        {"prompt": "Say hi", "completion": "Hi!", "source": "chat"},
    ],
    "chat": [
        {"messages": CHAT, "source": "geo"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "source": "x"},
    ],
    "preference": [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "source": "geo"},
        {"prompt": "2+2=", "chosen": "4", "rejected": "5", "source": "math"},
    ],
    "reference": [
        {"prompt": "2+2=", "answer": "4", "source": "math"},
        {"prompt": "Capital of France?", "answer": "Paris", "source": "geo"},
    ],
    "feedback": [
        {"prompt": "2+2=", "completion": "4", "label": True, "source": "math"},
        {"prompt": "2+2=", "completion": "5", "label": False, "source": "math"},
    ],
}


# --- writing test files --------------------------------------------------------------------------


def jsonl_bytes(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: json.dumps(value) if isinstance(value, list) else value for key, value in row.items()})
    return out.getvalue().encode()


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=row_group_size)
    return out.getvalue()


def encode(rows: list[dict[str, Any]], fmt: str, row_group_size: int | None = None) -> bytes:
    if fmt == "jsonl":
        return jsonl_bytes(rows)
    if fmt == "csv":
        return csv_bytes(rows)
    return parquet_bytes(pa.Table.from_pylist(rows), row_group_size)


def write(tmp_path: Path, content: bytes, name: str = "data") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def issue_texts(report: ValidationReport) -> list[str]:
    return [str(issue) for issue in report.issues]


# --- valid files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("kind", list(VALID_ROWS))
def test_valid_file_passes_with_hash_preview_stats_and_rows(tmp_path, kind, fmt):
    rows = VALID_ROWS[kind]
    content = encode(rows, fmt)
    path = write(tmp_path, content)

    report = validate_file(path, format=fmt, kind=kind)

    assert report.ok, issue_texts(report)
    assert (report.row_count, report.error_count, report.issues) == (2, 0, [])
    assert report.sha256 == hashlib.sha256(content).hexdigest()
    assert report.size_bytes == len(content)
    assert report.columns == list(rows[0])  # the extra "source" column is kept
    assert report.preview == rows
    assert report.stats["source"]["non_null"] == 2
    assert list(iter_rows(path, fmt, kind)) == rows


def test_stats_are_running_aggregates_per_column(tmp_path):
    rows = [{"prompt": "a" * n, "completion": "xyz", "score": n} for n in (1, 2, 6)]
    report = validate_file(write(tmp_path, jsonl_bytes(rows)), format="jsonl", kind="prompt_completion")

    assert report.stats == {
        "prompt": {"non_null": 3, "length": {"min": 1, "mean": 3.0, "max": 6}},
        "completion": {"non_null": 3, "length": {"min": 3, "mean": 3.0, "max": 3}},
        "score": {"non_null": 3},
    }


def test_chat_stats_count_turns_and_roles(tmp_path):
    report = validate_file(write(tmp_path, encode(VALID_ROWS["chat"], "csv")), format="csv", kind="chat")

    assert report.stats["messages"] == {
        "non_null": 2,
        "turns": {"min": 2, "mean": 2.5, "max": 3},
        "roles": {"system": 1, "user": 2, "assistant": 2},
    }


def test_preview_keeps_twenty_rows_and_cuts_long_values(tmp_path):
    rows = [{"prompt": f"p{i} " + "x" * 1000, "completion": "c", "tags": list(range(50))} for i in range(30)]
    report = validate_file(write(tmp_path, jsonl_bytes(rows)), format="jsonl", kind="prompt_completion")

    assert report.ok
    assert report.row_count == 30
    assert len(report.preview) == 20
    first = report.preview[0]
    assert first["prompt"] == ("p0 " + "x" * 1000)[:200] + "…"
    assert first["tags"] == [*range(20), "… 30 more"]
    assert report.stats["prompt"]["length"]["max"] == 1004  # stats measure the whole value


def test_report_round_trips_through_json(tmp_path):
    lines = jsonl_bytes(VALID_ROWS["prompt_completion"]) + b'{"prompt": 1, "completion": "x"}\n'
    report = validate_file(write(tmp_path, lines), format="jsonl", kind="prompt_completion")

    stored = json.loads(json.dumps(report.to_dict()))

    assert stored["ok"] is False
    assert stored["issues"][0]["text"] == 'line 3: field "prompt": expected a string, got number'
    assert ValidationReport.from_dict(stored) == report


def test_blank_lines_bom_and_crlf_are_accepted(tmp_path):
    jsonl = b"\xef\xbb\xbf" + b'{"prompt": "a", "completion": "b"}\r\n\r\n   \n{"prompt": "c", "completion": "d"}'
    csv_content = b'\xef\xbb\xbfprompt,completion\r\na,b\r\n\r\n"multi\r\nline",d\r\n'

    jsonl_report = validate_file(write(tmp_path, jsonl, "a.jsonl"), format="jsonl", kind="prompt_completion")
    csv_report = validate_file(write(tmp_path, csv_content, "a.csv"), format="csv", kind="prompt_completion")

    assert jsonl_report.ok and jsonl_report.row_count == 2
    assert csv_report.ok and csv_report.row_count == 2
    assert csv_report.columns == ["prompt", "completion"]
    assert csv_report.preview[1] == {"prompt": "multi\r\nline", "completion": "d"}


def test_parquet_accepts_large_and_dictionary_encoded_strings(tmp_path):
    table = pa.table(
        {
            "prompt": pa.array(["a", "b"], type=pa.large_string()),
            "answer": pa.array(["x", "y"]).dictionary_encode(),
        }
    )
    report = validate_file(write(tmp_path, parquet_bytes(table)), format="parquet", kind="reference")

    assert report.ok, issue_texts(report)
    assert report.preview == [{"prompt": "a", "answer": "x"}, {"prompt": "b", "answer": "y"}]


# --- bad files: each rejected with its own message -----------------------------------------------

PC = "prompt_completion"
GOOD = b'{"prompt": "a", "completion": "b"}\n'
TOO_DEEP = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "completion": "b"}\n'


def chat_line(turns: Any) -> bytes:
    return jsonl_bytes([{"messages": turns}])


def parquet(columns: dict[str, pa.Array]) -> bytes:
    return parquet_bytes(pa.table(columns))


def truncated_parquet() -> bytes:
    content = encode(VALID_ROWS[PC], "parquet")
    return content[: len(content) // 2]


def bad(name: str, fmt: str, kind: str, content: bytes, expected: str) -> Any:
    """A bad file and the message expected among its issues."""
    return pytest.param(fmt, kind, content, expected, id=name)


BAD_FILES = [
    # JSONL structure and encoding
    bad(
        "bad JSON",
        "jsonl",
        PC,
        GOOD * 2 + b'{"prompt": "a" "completion": "b"}\n',
        "line 3: invalid JSON (Expecting ',' delimiter at column 16)",
    ),
    bad("JSON nested too deeply", "jsonl", PC, TOO_DEEP, "line 1: invalid JSON (nested too deeply)"),
    bad("line not an object", "jsonl", PC, GOOD + b'["a", "b"]\n', "line 2: expected a JSON object, got array"),
    bad(
        "bad UTF-8",
        "jsonl",
        PC,
        GOOD * 3 + b'{"prompt": "caf\xe9", "completion": "b"}\n',
        "line 4: not valid UTF-8 (byte 0xe9 at position 16)",
    ),
    bad(
        "oversized line",
        "jsonl",
        PC,
        GOOD * 8 + b'{"prompt": "' + b"x" * 2_000_000 + b'", "completion": "b"}\n',
        "line 9: longer than 1000000 bytes",
    ),
    bad("empty file", "jsonl", PC, b"", "file is empty"),
    bad("only blank lines", "jsonl", PC, b"\n  \n\r\n", "file has no data rows"),
    # fields
    bad(
        "missing field",
        "jsonl",
        "preference",
        b'{"prompt": "p", "chosen": "a"}\n',
        'line 1: missing required field "rejected"',
    ),
    bad(
        "wrong type",
        "jsonl",
        PC,
        GOOD * 6 + b'{"prompt": "a", "completion": 7}\n',
        'line 7: field "completion": expected a string, got number',
    ),
    bad(
        "null value",
        "jsonl",
        "reference",
        b'{"prompt": "a", "answer": null}\n',
        'line 1: field "answer": expected a string, got null',
    ),
    bad("empty string", "jsonl", PC, b'{"prompt": "  ", "completion": "b"}\n', 'line 1: field "prompt" is empty'),
    bad(
        "preference chosen == rejected",
        "jsonl",
        "preference",
        jsonl_bytes([{"prompt": "p", "chosen": "same", "rejected": "same"}]),
        'line 1: "chosen" and "rejected" are identical',
    ),
    bad(
        "feedback label not a boolean",
        "jsonl",
        "feedback",
        jsonl_bytes(
            [{"prompt": "2+2=", "completion": "4", "label": True}, {"prompt": "2+2=", "completion": "5", "label": "no"}]
        ),
        'line 2: field "label": expected true or false, got string "no"',
    ),
    bad(
        "feedback label missing",
        "jsonl",
        "feedback",
        jsonl_bytes([{"prompt": "2+2=", "completion": "4"}]),
        'line 1: missing required field "label"',
    ),
    # conversations
    bad(
        "chat bad role",
        "jsonl",
        "chat",
        GOOD + chat_line([*CHAT[:2], {"role": "bot", "content": "Paris."}]),
        'line 2: field "messages": turn 3 has role "bot" (expected system, user or assistant)',
    ),
    bad(
        "chat not ending in assistant",
        "jsonl",
        "chat",
        chat_line([*CHAT, {"role": "user", "content": "And Spain?"}]),
        'line 1: field "messages": ends with a "user" turn (must end with an assistant turn)',
    ),
    bad(
        "chat without a user turn",
        "jsonl",
        "chat",
        chat_line([CHAT[0], CHAT[2]]),
        'line 1: field "messages": has no user turn',
    ),
    bad(
        "chat turn not an object",
        "jsonl",
        "chat",
        chat_line([CHAT[1], "Paris."]),
        'line 1: field "messages": turn 2 is string (expected an object with role and content)',
    ),
    bad(
        "chat content not a string",
        "jsonl",
        "chat",
        chat_line([CHAT[1], {"role": "assistant", "content": None}]),
        'line 1: field "messages": turn 2 has "content" of type null (expected a string)',
    ),
    bad(
        "chat messages not a list",
        "jsonl",
        "chat",
        jsonl_bytes([{"messages": "Hi"}]),
        'line 1: field "messages": expected a list of messages, got string',
    ),
    # CSV
    bad("empty CSV file", "csv", PC, b"", "file is empty"),
    bad("CSV header only", "csv", PC, b"prompt,completion\n", "file has no data rows"),
    bad("CSV missing column", "csv", PC, b"prompt,answer\na,b\n", 'CSV header is missing column "completion"'),
    bad(
        "CSV duplicate column",
        "csv",
        PC,
        b"prompt,completion,prompt\na,b,c\n",
        'CSV header has duplicate column "prompt"',
    ),
    bad("CSV header without a name", "csv", PC, b"prompt,,completion\na,b,c\n", "CSV header has no name for column 2"),
    bad(
        "CSV ragged row",
        "csv",
        PC,
        b"prompt,completion\na,b\na,b,c\n",
        "line 3: expected 2 cells (one per header column), got 3",
    ),
    bad(
        "CSV unclosed quote",
        "csv",
        PC,
        b'prompt,completion\na,b\n"a,b\n',
        "line 3: malformed CSV (unexpected end of data)",
    ),
    bad(
        "CSV bad UTF-8",
        "csv",
        PC,
        b"prompt,completion\na,b\nna\xefve,b\n",
        "line 3: not valid UTF-8 (byte 0xef at position 3)",
    ),
    bad(
        "CSV oversized line",
        "csv",
        PC,
        b"prompt,completion\n" + b"x" * 1_000_001 + b",b\na,b\n",
        "line 2: longer than 1000000 bytes",
    ),
    bad(
        "CSV messages not JSON",
        "csv",
        "chat",
        b'messages\n"[{""role"": ""user""}"\n',
        "line 2: field \"messages\": invalid JSON (Expecting ',' delimiter at column 18)",
    ),
    bad(
        "CSV feedback label not true or false",
        "csv",
        "feedback",
        b"prompt,completion,label\n2+2=,4,TRUE\n2+2=,5,0\n",
        'line 3: field "label": expected true or false, got string "0"',
    ),
    # Parquet
    bad("empty Parquet file", "parquet", PC, b"", "file is empty"),
    bad(
        "truncated Parquet",
        "parquet",
        PC,
        truncated_parquet(),
        "not a Parquet file or truncated (Parquet magic bytes not found in footer. "
        "Either the file is corrupted or this is not a parquet file.)",
    ),
    bad(
        "Parquet missing column",
        "parquet",
        PC,
        parquet({"prompt": pa.array(["a"])}),
        'Parquet file is missing column "completion"',
    ),
    bad(
        "Parquet wrong column type",
        "parquet",
        PC,
        parquet({"prompt": pa.array(["a"]), "completion": pa.array([1])}),
        'column "completion" has type int64 (expected string)',
    ),
    bad(
        "Parquet messages as text",
        "parquet",
        "chat",
        parquet({"messages": pa.array(["[]"])}),
        'column "messages" has type string (expected list<struct<role: string, content: string>>)',
    ),
    bad(
        "Parquet feedback label as text",
        "parquet",
        "feedback",
        parquet({"prompt": pa.array(["a"]), "completion": pa.array(["b"]), "label": pa.array(["true"])}),
        'column "label" has type string (expected bool)',
    ),
    bad(
        "Parquet null cell",
        "parquet",
        PC,
        parquet({"prompt": pa.array(["a", None]), "completion": pa.array(["b", "c"])}),
        'row 2: field "prompt": expected a string, got null',
    ),
]


@pytest.mark.parametrize(("fmt", "kind", "content", "expected"), BAD_FILES)
def test_bad_file_is_rejected_with_a_specific_message(tmp_path, fmt, kind, content, expected):
    report = validate_file(write(tmp_path, content), format=fmt, kind=kind)

    assert not report.ok
    assert expected in issue_texts(report)
    assert report.sha256 == hashlib.sha256(content).hexdigest()  # even when reading stopped early
    assert report.size_bytes == len(content)


def test_unknown_extension_is_rejected():
    with pytest.raises(DatasetError) as caught:
        detect_format("upload/data.txt")

    assert str(caught.value) == (
        'cannot tell the format of "data.txt" from its extension '
        "(expected one of .jsonl, .json, .ndjson, .csv, .parquet)"
    )


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.json", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("dir.v2/a.csv", "csv"),
        ("a.Parquet", "parquet"),
    ],
)
def test_detect_format_from_extension(filename, fmt):
    assert detect_format(filename) == fmt


def test_unknown_format_or_kind_argument_is_a_value_error(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(ValueError, match='unknown dataset format "xml"'):
        validate_file(path, format="xml", kind=PC)
    with pytest.raises(ValueError, match='unknown dataset kind "sft"'):
        validate_file(path, format="jsonl", kind="sft")


def test_oversized_line_is_skipped_and_reading_goes_on(tmp_path):
    content = GOOD + b'{"prompt": "' + b"x" * 500 + b'", "completion": "b"}\n' + GOOD
    report = validate_file(write(tmp_path, content), format="jsonl", kind=PC, max_line_bytes=100)

    assert issue_texts(report) == ["line 2: longer than 100 bytes"]
    assert report.row_count == 3
    assert len(report.preview) == 2


def test_parquet_issues_name_the_row(tmp_path):
    table = pa.table({"prompt": ["a", "b", "c"], "chosen": ["x", "y", "z"], "rejected": ["w", "y", ""]})
    report = validate_file(write(tmp_path, parquet_bytes(table)), format="parquet", kind="preference")

    assert issue_texts(report) == ['row 2: "chosen" and "rejected" are identical', 'row 3: field "rejected" is empty']
    assert report.issues[0] == ValidationIssue(2, "rejected", '"chosen" and "rejected" are identical', "row")


def test_max_rows_rejects_a_longer_file(tmp_path):
    report = validate_file(write(tmp_path, GOOD * 10), format="jsonl", kind=PC, max_rows=4)

    assert issue_texts(report) == ["file has more than 4 rows (the limit)"]
    assert report.row_count == 4
    assert report.sha256 == hashlib.sha256(GOOD * 10).hexdigest()


# --- the first N issues are kept, the rest counted -----------------------------------------------


def test_first_twenty_issues_are_kept_and_the_rest_counted(tmp_path):
    bad = b'{"prompt": "a"}\n'
    content = (GOOD + bad) * 50  # every even line lacks "completion"
    report = validate_file(write(tmp_path, content), format="jsonl", kind=PC)

    assert report.error_count == 50
    assert len(report.issues) == 20
    assert [issue.row for issue in report.issues] == list(range(2, 42, 2))
    assert report.issues[0] == ValidationIssue(2, "completion", 'missing required field "completion"')
    assert report.row_count == 100
    assert report.stats["prompt"]["non_null"] == 50  # statistics describe the valid rows


def test_max_errors_sets_how_many_issues_are_kept(tmp_path):
    content = b"not json\n" * 12
    report = validate_file(write(tmp_path, content), format="jsonl", kind=PC, max_errors=3)

    assert (len(report.issues), report.error_count) == (3, 12)


def test_all_header_problems_are_reported_together(tmp_path):
    report = validate_file(write(tmp_path, b"prompt,prompt,x\n1,2,3\n"), format="csv", kind="preference")

    assert issue_texts(report) == [
        'CSV header has duplicate column "prompt"',
        'CSV header is missing column "chosen"',
        'CSV header is missing column "rejected"',
    ]


# --- iter_rows -----------------------------------------------------------------------------------


def test_iter_rows_parses_csv_conversations(tmp_path):
    path = write(tmp_path, csv_bytes(VALID_ROWS["chat"]))

    rows = list(iter_rows(path, "csv", "chat"))

    assert rows[0]["messages"] == CHAT
    assert rows[0]["source"] == "geo"


def test_iter_rows_raises_at_the_first_bad_row(tmp_path):
    path = write(tmp_path, GOOD * 2 + b'{"prompt": "a", "completion": ""}\n' + GOOD)
    rows = iter_rows(path, "jsonl", PC)

    assert next(rows) == {"prompt": "a", "completion": "b"}
    assert next(rows) == {"prompt": "a", "completion": "b"}
    with pytest.raises(DatasetError, match='line 3: field "completion" is empty') as caught:
        next(rows)
    assert caught.value.issues == [ValidationIssue(3, "completion", 'field "completion" is empty')]


def test_iter_rows_raises_for_a_file_level_problem(tmp_path):
    path = write(tmp_path, b"prompt\nx\n")
    with pytest.raises(DatasetError, match='CSV header is missing column "completion"'):
        list(iter_rows(path, "csv", PC))


# --- constant memory -----------------------------------------------------------------------------

MEMORY_ROWS = 200_000
MEMORY_LIMIT_BYTES = 3 * 1024 * 1024
ROW_GROUP_ROWS = 10_000  # a multi-group Parquet file, as real exports are


def _peak_memory_of_validation(path: Path, fmt: str, kind: str) -> tuple[ValidationReport, int]:
    gc.collect()
    tracemalloc.start()
    try:
        report = validate_file(path, format=fmt, kind=kind)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_validation_runs_in_constant_memory(tmp_path, fmt):
    rows = [
        {"prompt": f"Question number {i}: what is {i} + {i}?", "completion": f"It is {2 * i}.", "id": i}
        for i in range(MEMORY_ROWS)
    ]
    path = write(tmp_path, encode(rows, fmt, row_group_size=ROW_GROUP_ROWS))
    del rows

    report, peak = _peak_memory_of_validation(path, fmt, PC)

    assert report.ok and report.row_count == MEMORY_ROWS
    print(f"{fmt}: tracemalloc peak {peak / 1e6:.2f} MB validating a {path.stat().st_size / 1e6:.1f} MB file")
    assert peak < MEMORY_LIMIT_BYTES, f"{fmt}: peak {peak / 1e6:.2f} MB for a {path.stat().st_size / 1e6:.0f} MB file"


def test_upload_validation_the_dataset_model_and_the_trainer_know_the_same_kinds():
    from trainers.data import KIND_COLUMNS
    from trainers.dataset_kinds import DATASET_KINDS

    from refinery.data.models import DatasetKind
    from refinery.data.validation import KINDS

    assert DatasetKind.values == list(DATASET_KINDS) == list(KINDS) == list(KIND_COLUMNS)
    assert {name: tuple(spec.fields) for name, spec in KINDS.items()} == KIND_COLUMNS
    assert DatasetKind.PREFERENCE == "preference" and KINDS["preference"].must_differ == ("chosen", "rejected")
