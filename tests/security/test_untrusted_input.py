"""Issue 11, holes 2-4: untrusted input. Each test replays the attack and checks it now fails.

2. A Parquet decompression bomb (a few hundred bytes that decode to gigabytes) uploaded through the
   web page and the API: refused with a clear message, nothing stored, the web process stays small;
   validation runs in a child process with a memory and a time limit.
3. Oversized request bodies: 413 (JSON for the API), refused before or while streaming, never a 500;
   a JSON body sent as text/plain: 415.
4. A catastrophic regular expression in GRPO's regex reward: fails quickly with a message naming it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from refinery.data.models import Dataset, DatasetVersion
from refinery.data.services import DatasetUploadError, dataset_version_create
from refinery.data.validate_child import _child_environment, memory_message, timeout_message
from refinery.data.validation import DecodeLimits, decoded_size_message, validate_file
from refinery.pipelines.models import Pipeline
from tests.fixtures import ROWS, write_jsonl

MiB = 1024**2
GiB = 1024**3
DEFAULT_DECODED_LIMIT = 8 * GiB  # REFINERY_DATASET_MAX_DECODED_BYTES's default
RSS_GROWTH_LIMIT = 300 * 1000**2


# --- the bomb ------------------------------------------------------------------------------------


def parquet_bomb(*, rows: int, value_bytes: int, columns=("prompt", "completion")) -> bytes:
    """One `value_bytes` string, dictionary-encoded and repeated on every row: the dictionary page
    holds it once (zstd shrinks it to a few hundred bytes) and the rows are run-length-encoded
    zeros, so the file declares about `value_bytes` uncompressed per column yet decodes to
    `rows * value_bytes`."""
    value = pa.array(["a" * value_bytes])
    indices = pa.repeat(0, rows).cast(pa.int32())
    column = pa.DictionaryArray.from_arrays(indices, value)
    table = pa.table({name: column for name in columns})
    out = io.BytesIO()
    pq.write_table(
        table,
        out,
        compression="zstd",
        compression_level=22,
        dictionary_pagesize_limit=2 * value_bytes,
        write_statistics=False,
        store_schema=False,
    )
    return out.getvalue()


BOMB_VALUE_BYTES = 1_000_000  # exactly the per-value limit: only the decoded-size limit stops this one
BOMB_ROWS = 4_400
BOMB_DECODED = 2 * BOMB_ROWS * BOMB_VALUE_BYTES  # 8.8 GB, over the 8 GiB (8.59 GB) default


@pytest.fixture(scope="module")
def bomb() -> bytes:
    content = parquet_bomb(rows=BOMB_ROWS, value_bytes=BOMB_VALUE_BYTES)
    metadata = pq.ParquetFile(io.BytesIO(content)).metadata
    declared = sum(metadata.row_group(0).column(i).total_uncompressed_size for i in range(2))
    print(
        f"\nParquet bomb: {len(content)} bytes on disk, declares {declared:,} bytes uncompressed, "
        f"decodes to {BOMB_DECODED:,} bytes"
    )
    assert len(content) < 1024 and declared < 3 * BOMB_VALUE_BYTES and BOMB_DECODED > DEFAULT_DECODED_LIMIT
    return content


def test_the_bomb_read_as_before_needs_more_than_a_gibibyte(bomb, tmp_path):
    """The attack as reported: the old reader (record batches of 1,024 rows, strings expanded by Arrow)
    cannot even hold the first batch of this file in 1 GiB (run in a child so that only it suffers)."""
    path = tmp_path / "bomb.parquet"
    path.write_bytes(bomb)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
        "import pyarrow.parquet as pq; "
        "batch = next(pq.ParquetFile(sys.argv[1], pre_buffer=False).iter_batches(batch_size=1024)); "
        "print(batch.nbytes)"
    )
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode != 0 and "MemoryError" in done.stderr, (done.returncode, done.stdout, done.stderr[-500:])


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@contextmanager
def peak_rss_growth():
    """How far this process's peak resident memory rose inside the block (bytes, in the dict yielded)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        before = _status("VmRSS")
    except OSError:
        before = _status("VmHWM")
    measured: dict[str, int] = {}
    yield measured
    measured["growth"] = _status("VmHWM") - before
    measured["peak"] = _status("VmHWM")


def _upload_file(content: bytes, name: str) -> io.BytesIO:
    upload = io.BytesIO(content)
    upload.name = name
    return upload


def _nothing_stored(dataset_dir: Path) -> None:
    assert not Dataset.objects.exists()
    assert not DatasetVersion.objects.exists()
    assert not (dataset_dir.exists() and any(p.is_file() for p in dataset_dir.rglob("*")))
    spool = dataset_dir.parent / "tmp"
    assert not (spool.exists() and any(spool.iterdir())), list(spool.iterdir())


# --- hole 2: the bomb through the web page and the API -------------------------------------------


def test_parquet_bomb_upload_is_refused_through_page_and_api_and_the_web_process_stays_small(
    bomb, browser_client, api, dataset_dir
):
    message = decoded_size_message(DEFAULT_DECODED_LIMIT)
    assert message == "the file decompresses to more than 8,589,934,592 bytes (8 GiB), the limit per file"
    with peak_rss_growth() as page_rss:
        response = browser_client.post(
            "/datasets/upload/",
            {"name": "bomb", "kind": "prompt_completion", "file": _upload_file(bomb, "bomb.parquet")},
        )
    assert response.status_code == 400
    assert message in response.content.decode()
    _nothing_stored(dataset_dir)

    with peak_rss_growth() as api_rss:
        response = api.post(
            "/api/v1/datasets",
            {"name": "bomb", "kind": "prompt_completion"},
            files={"file": _upload_file(bomb, "bomb.parquet")},
        )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["detail"] == "1 problem found; nothing was stored"
    assert body["issues"] == [{"row": None, "field": None, "message": message}]
    _nothing_stored(dataset_dir)

    print(
        f"peak RSS growth of the web (test) process: page {page_rss['growth'] / 1e6:.1f} MB, "
        f"API {api_rss['growth'] / 1e6:.1f} MB (peak RSS {max(page_rss['peak'], api_rss['peak']) / 1e6:.0f} MB)"
    )
    assert page_rss["growth"] < RSS_GROWTH_LIMIT
    assert api_rss["growth"] < RSS_GROWTH_LIMIT


def test_a_valid_parquet_upload_still_goes_through_the_child(api, dataset_dir, tmp_path):
    table = pa.table({"prompt": [r["prompt"] for r in ROWS], "completion": [r["completion"] for r in ROWS]})
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    response = api.post(
        "/api/v1/datasets",
        {"name": "sums", "kind": "prompt_completion"},
        files={"file": _upload_file(out.getvalue(), "sums.parquet")},
    )
    assert response.status_code == 201, response.content
    assert response.json()["row_count"] == len(ROWS)


# --- hole 2: the limits, read in-process (values are measured before they are expanded) ----------


def test_values_over_the_per_value_limit_are_row_problems_and_never_expanded(tmp_path):
    path = tmp_path / "long.parquet"
    path.write_bytes(parquet_bomb(rows=3, value_bytes=5_000_000))
    report = validate_file(path, format="parquet", kind="prompt_completion")
    assert report.error_count == 6 and report.row_count == 3
    assert str(report.issues[0]) == (
        'row 1: field "prompt" decodes to 5,000,000 bytes, more than the limit of 1,000,000 bytes per value'
    )
    assert report.preview == []


def test_a_conversation_bomb_is_measured_through_lists_and_structs(tmp_path):
    rows = 20_000
    content = pa.DictionaryArray.from_arrays(pa.array([0, 1] * rows, pa.int32()), pa.array(["Hi", "a" * 1_000_000]))
    role = pa.DictionaryArray.from_arrays(pa.array([0, 1] * rows, pa.int32()), pa.array(["user", "assistant"]))
    turns = pa.StructArray.from_arrays([role, content], names=["role", "content"])
    messages = pa.ListArray.from_arrays(pa.array(range(0, 2 * rows + 1, 2), pa.int32()), turns)
    path = tmp_path / "chat-bomb.parquet"
    pq.write_table(
        pa.table({"messages": messages}),
        path,
        compression="zstd",
        compression_level=22,
        dictionary_pagesize_limit=1 << 24,
        write_statistics=False,
        store_schema=False,
    )
    assert path.stat().st_size < 2048  # decodes to 20 GB

    report = validate_file(path, format="parquet", kind="chat")
    assert [str(issue) for issue in report.issues] == [decoded_size_message(DEFAULT_DECODED_LIMIT)]


def test_rows_are_expanded_in_slices_of_the_batch_limit_and_a_larger_row_is_a_problem(tmp_path):
    prompts = [f"question {i:04d} " + "x" * 30 for i in range(1000)]
    prompts[700] = "y" * 90
    path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"prompt": prompts, "completion": ["z" * 90 if i == 700 else "a" for i in range(1000)]}), path
    )
    report = validate_file(
        path, format="parquet", kind="prompt_completion", limits=DecodeLimits(max_batch_bytes=150, max_value_bytes=100)
    )
    assert report.row_count == 1000 and report.error_count == 1
    assert str(report.issues[0]) == "row 701: the row decodes to 180 bytes, more than the limit of 150 per row"
    assert [row["prompt"][:13] for row in report.preview[:3]] == ["question 0000", "question 0001", "question 0002"]
    assert report.stats["prompt"]["non_null"] == 999


def test_decoded_sizes_are_counted_through_every_arrow_shape():
    from refinery.data.validation import _row_bytes

    def sizes(array):
        return _row_bytes(array).to_pylist()

    strings = pa.array(["ab", None, "cde"])
    assert sizes(strings) == [2, 0, 3]
    assert sizes(strings.dictionary_encode()) == [2, 0, 3]
    assert sizes(pa.array([["ab", None], [], None, ["cde"]]).slice(1)) == [0, 0, 3]
    assert sizes(pa.array([{"a": "xx", "b": [1, 2]}, None, {"a": "y", "b": None}])) == [18, 0, 1]
    assert sizes(pa.array([[("k", "vv")], [("kk", "v"), ("a", "b")]], pa.map_(pa.string(), pa.string()))) == [3, 5]
    assert sizes(pa.array([[1, 2], [3, 4], None], pa.list_(pa.int32(), 2)).slice(1)) == [8, 0]
    assert sizes(pa.array(["abc"], pa.string_view())) == [3]
    assert sizes(pa.array([True, False])) == [1, 1]


def test_declared_row_group_size_is_checked_before_any_page_is_read(tmp_path):
    path = tmp_path / "big-group.parquet"
    pq.write_table(pa.table({"prompt": ["x" * 1000] * 100, "completion": ["y"] * 100}), path, use_dictionary=False)
    report = validate_file(
        path, format="parquet", kind="prompt_completion", limits=DecodeLimits(max_row_group_bytes=10_000)
    )
    assert report.error_count == 1 and report.row_count == 0
    message = report.issues[0].message
    assert message.startswith("row group 1 decompresses to ")
    assert message.endswith(
        "bytes, more than the limit of 10,000 bytes (9.8 KiB) per row group; write the file with smaller row groups"
    )


def test_parquet_strings_that_are_not_utf8_are_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "latin1.parquet"
    prompts = pa.array([b"fine", "caf\u00e9".encode("latin-1")], pa.binary()).view(pa.string())  # unchecked
    pq.write_table(pa.table({"prompt": prompts, "completion": ["a", "b"]}), path)
    report = validate_file(path, format="parquet", kind="prompt_completion")
    assert [str(issue) for issue in report.issues] == [
        "Parquet data unreadable after row 0 (a string column holds bytes that are not UTF-8)"
    ]


def test_text_files_decode_to_their_own_size(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    report = validate_file(path, format="jsonl", kind="prompt_completion", limits=DecodeLimits(max_decoded_bytes=100))
    assert [issue.message for issue in report.issues] == [decoded_size_message(100)]


def test_json_with_a_huge_integer_is_a_row_problem_not_a_crash(tmp_path):
    path = tmp_path / "int.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": ' + "9" * 5000 + ', "completion": "b"}\n')
    report = validate_file(path, format="jsonl", kind="prompt_completion")
    assert report.error_count == 1
    assert str(report.issues[0]).startswith("line 2: invalid JSON (Exceeds the limit (4300 digits)")


# --- hole 2: the child's memory and time limits ---------------------------------------------------


def test_validation_that_runs_out_of_its_memory_limit_fails_the_upload_clearly(
    team, alice, dataset_dir, tmp_path, settings
):
    # 1,500 rows of one 900 kB prompt: 1.35 GB decoded, under every decoded-size limit. Read a slice of
    # 64 MiB at a time (the default) it validates; with slices allowed to be 4 GiB, a whole batch of
    # 1,024 rows (920 MB of Python strings) is expanded at once and the child's 640 MiB runs out.
    path = tmp_path / "wide.parquet"
    path.write_bytes(parquet_bomb(rows=1_500, value_bytes=900_000, columns=("prompt",)))
    table = pq.read_table(path, read_dictionary=["prompt"]).append_column("completion", pa.repeat("x", 1_500))
    pq.write_table(table, path, compression="zstd", dictionary_pagesize_limit=1 << 21)

    def upload(name):
        return dataset_version_create(
            team=team,
            user=alice,
            name=name,
            kind="prompt_completion",
            filename="wide.parquet",
            chunks=iter([path.read_bytes()]),
        )

    settings.REFINERY_VALIDATION_MEMORY_BYTES = 640 * MiB
    settings.REFINERY_DATASET_MAX_BATCH_BYTES = 4 * GiB
    with pytest.raises(DatasetUploadError) as refused:
        upload("wide")
    assert refused.value.message == f"file: {memory_message(640 * MiB)}; nothing was stored"
    assert "validation ran out of its memory limit of 640 MiB" in refused.value.message
    _nothing_stored(dataset_dir)

    settings.REFINERY_DATASET_MAX_BATCH_BYTES = 64 * MiB
    assert upload("wide").version.row_count == 1_500  # the same file, read in bounded slices


def test_validation_that_runs_out_of_time_is_killed_and_fails_the_upload(team, alice, dataset_dir, tmp_path, settings):
    rows = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(300_000)]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    settings.REFINERY_VALIDATION_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    with pytest.raises(DatasetUploadError) as refused:
        dataset_version_create(
            team=team,
            user=alice,
            name="long",
            kind="prompt_completion",
            filename="long.jsonl",
            chunks=iter([path.read_bytes()]),
        )
    assert time.monotonic() - started < 10
    assert refused.value.message == f"file: {timeout_message(0.3)}; nothing was stored"
    _nothing_stored(dataset_dir)


def test_the_validation_child_gets_no_secrets(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/refinery")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    env = _child_environment()
    assert set(env) == {
        "PATH",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "LANG",
        "ARROW_DEFAULT_MEMORY_POOL",
        "OMP_NUM_THREADS",
        "ARROW_IO_THREADS",
    }


# --- hole 3: oversized bodies and content types ---------------------------------------------------


def test_a_json_body_over_the_limit_gets_413_in_the_api_error_shape(api, settings):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = json.dumps({"name": "big", "description": "x" * limit, "spec": {"stages": []}})
    response = api.client.post("/api/v1/pipelines", body, content_type="application/json", headers=api.headers)
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"the request body is larger than the limit of 10 MiB ({limit:,} bytes)"}
    assert not Pipeline.objects.exists()


def test_a_form_over_the_limit_gets_a_plain_413_page(browser_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = browser_client.post(
        "/datasets/upload/", "name=" + "x" * 2000, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413
    page = response.content.decode()
    assert "Too large to accept" in page
    assert "the request body is larger than the limit of 1000 B (1,000 bytes)" in page
    assert "Traceback" not in page


def test_json_sent_as_text_plain_gets_415(api):
    body = json.dumps({"name": "p", "spec": {"stages": []}})
    response = api.client.post("/api/v1/pipelines", body, content_type="text/plain", headers=api.headers)
    assert response.status_code == 415
    assert response.json() == {
        "detail": "this route takes a JSON body: send it with Content-Type: application/json (got text/plain)"
    }
    assert not Pipeline.objects.exists()


def test_other_api_errors_keep_their_shape(api):
    response = api.client.post("/api/v1/pipelines", "{not json", content_type="application/json", headers=api.headers)
    assert response.status_code == 400
    assert response.json() == {"detail": "Cannot parse request body"}
    response = api.client.get("/api/v1/runs", headers={"Authorization": "Bearer rfy_nope"})
    assert response.status_code == 401 and response.json() == {"detail": "Unauthorized"}


RECEIVED: list[int] = []  # what the temporary-file handler (after the limit handler) was given, per upload


class RecordingTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, *args, **kwargs):
        RECEIVED.append(0)
        super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        RECEIVED[-1] += len(raw_data)
        return super().receive_data_chunk(raw_data, start)


@pytest.fixture
def small_upload_limit(settings, tmp_path):
    """Uploads over 256 KiB are refused; files over 1 KiB are spooled to `uploads/` by the recording handler."""
    RECEIVED.clear()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    settings.REFINERY_MAX_UPLOAD_BYTES = 256 * 1024
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads)
    settings.FILE_UPLOAD_HANDLERS = [
        "refinery.core.request_limits.UploadLimitHandler",
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        f"{__name__}.RecordingTemporaryFileUploadHandler",
    ]
    return uploads


FOUR_MIB_JSONL = (json.dumps({"prompt": "p" * 100, "completion": "c" * 100}) + "\n").encode() * (4 * MiB // 230)


def test_an_upload_over_the_limit_is_stopped_while_streaming(small_upload_limit, browser_client, api, dataset_dir):
    message = "the upload is larger than the limit of 256 KiB (262,144 bytes); nothing was stored"
    form = {"name": "big", "kind": "prompt_completion"}

    # The upload page's XHR: JSON it shows in place.
    response = browser_client.post(
        "/datasets/upload/",
        {**form, "file": _upload_file(FOUR_MIB_JSONL, "a.jsonl")},
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": message, "error": message}
    # A plain form post: a page.
    response = browser_client.post("/datasets/upload/", {**form, "file": _upload_file(FOUR_MIB_JSONL, "a.jsonl")})
    assert response.status_code == 413 and message in response.content.decode()
    # The API: its JSON error shape.
    response = api.post("/api/v1/datasets", form, files={"file": _upload_file(FOUR_MIB_JSONL, "a.jsonl")})
    assert response.status_code == 413 and response.json() == {"detail": message}

    # Each body was under the Content-Length cut-off (256 KiB + 10 MiB of fields), so it streamed in; the
    # temporary file never got more than the limit, and Django deleted what it had.
    assert len(FOUR_MIB_JSONL) > 15 * 256 * 1024
    assert RECEIVED and all(0 < received <= 256 * 1024 for received in RECEIVED), RECEIVED
    assert list(small_upload_limit.iterdir()) == []
    _nothing_stored(dataset_dir)


def test_an_upload_declared_over_the_limit_is_refused_before_a_byte_is_read(
    small_upload_limit, api, dataset_dir, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    response = api.post(
        "/api/v1/datasets",
        {"name": "big", "kind": "prompt_completion"},
        files={"file": _upload_file(FOUR_MIB_JSONL, "a.jsonl")},
    )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("the upload is larger than the limit of 256 KiB")
    assert RECEIVED == []  # no file was started, let alone written
    _nothing_stored(dataset_dir)


def test_an_upload_under_the_limit_still_works(small_upload_limit, api, dataset_dir, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    response = api.post(
        "/api/v1/datasets",
        {"name": "sums", "kind": "prompt_completion"},
        files={"file": _upload_file(path.read_bytes(), "a.jsonl")},
    )
    assert response.status_code == 201, response.content
    assert RECEIVED == [path.stat().st_size]


# --- hole 4: regular-expression rewards -----------------------------------------------------------


def test_the_stdlib_engine_stalls_on_the_reported_pattern():
    """The attack as reported: `re` spends exponential time on ^(a+)+$ (killed here after 2 s)."""
    code = "import re; re.search(r'^(a+)+$', 'a' * 40 + 'b')"
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code], timeout=2, check=False)


def test_regex_reward_answers_the_reported_pattern_at_once():
    from trainers.rewards import regex_match

    started = time.monotonic()
    assert regex_match(["a" * 40 + "b", "a" * 40], pattern=r"^(a+)+$") == [0.0, 1.0]
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("pattern", [r"^(a|aa)+$", r"^(a|a)*$"])
def test_a_catastrophic_regex_fails_the_reward_quickly_naming_the_pattern(pattern):
    from trainers.rewards import REGEX_TIMEOUT_SECONDS, RewardTimeout, regex_match

    started = time.monotonic()
    with pytest.raises(RewardTimeout) as failed:
        regex_match(["ok", "a" * 40 + "b"], pattern=pattern)
    elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    assert str(failed.value).startswith(
        f"the regex_match pattern {pattern!r} took longer than {REGEX_TIMEOUT_SECONDS:g} s on a completion of 41 "
        f"characters (catastrophic backtracking)"
    )


def test_a_regex_that_does_not_compile_is_refused_when_the_pipeline_is_saved():
    from trainers.configs.grpo import GRPOConfig
    from trainers.schema import validate_config

    cfg, errors = validate_config(GRPOConfig, {"reward_regex_match_weight": 1, "regex_pattern": r"\p{Nope}"})
    assert cfg is None
    assert "not a valid regular expression: " in errors["regex_pattern"]
    cfg, errors = validate_config(GRPOConfig, {"reward_regex_match_weight": 1, "regex_pattern": r"^\p{Lu}\w+$"})
    assert errors == {} and cfg.regex_pattern == r"^\p{Lu}\w+$"  # the regex engine's syntax is accepted
