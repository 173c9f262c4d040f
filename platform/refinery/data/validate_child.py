"""Validate an untrusted dataset file in a child process, under a memory and a time limit.

A few hundred bytes of Parquet can decode to gigabytes. `refinery.data.validation`
counts decoded sizes before it expands anything, but the reader itself (Arrow's
page decompression) could still be made to allocate more than a web process
should. So uploads are validated by `python -m refinery.data.validate_child`:
the child caps its own address space (RLIMIT_AS) and CPU time, reads one JSON
request on stdin and writes one JSON answer on stdout; the parent waits at most
the wall-clock limit. A child that runs out of memory or time fails that upload
with a clear message, and the web process never holds the file's contents.

The child imports no Django and gets a minimal environment (no secrets).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refinery.data.validation import DEFAULT_MAX_ERRORS, DEFAULT_MAX_LINE_BYTES, DecodeLimits, ValidationReport

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BYTES = 1024**3
DEFAULT_TIMEOUT_SECONDS = 600.0

_PLATFORM_DIR = Path(__file__).resolve().parents[2]  # the folder that holds the `refinery` package
_REPO_DIR = _PLATFORM_DIR.parent  # the folder that holds `trainers` (validation reads its dataset kinds)
_MEMORY_EXIT = 3  # the child's exit status when it ran out of memory


class ValidationAborted(Exception):
    """The child could not finish validating: it ran out of memory or time, or crashed."""


@dataclass(frozen=True)
class ChildLimits:
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


def memory_message(memory_bytes: int) -> str:
    return (
        f"validation ran out of its memory limit of {memory_bytes / 1024**2:,.0f} MiB "
        f"(the file decodes to far more than it holds)"
    )


def timeout_message(timeout_seconds: float) -> str:
    return f"validation took longer than its time limit of {timeout_seconds:g} seconds"


def validate_file_in_child(
    path: str | Path,
    *,
    format: str,
    kind: str,
    limits: DecodeLimits | None = None,
    child: ChildLimits | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ValidationReport:
    """`validate_file` run by a child process; ValidationAborted when it runs out of memory or time."""
    child = child or ChildLimits()
    request = {
        "path": str(Path(path).resolve()),
        "format": format,
        "kind": kind,
        "limits": (limits or DecodeLimits()).to_dict(),
        "max_errors": max_errors,
        "max_line_bytes": max_line_bytes,
        "memory_bytes": child.memory_bytes,
        "cpu_seconds": int(child.timeout_seconds) + 1,
    }
    command = [sys.executable, "-s", "-P", "-m", "refinery.data.validate_child"]
    try:
        done = subprocess.run(
            command,
            input=json.dumps(request).encode(),
            capture_output=True,
            env=_child_environment(),
            cwd=_PLATFORM_DIR,
            timeout=child.timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        raise ValidationAborted(timeout_message(child.timeout_seconds)) from None
    answer = _answer(done.stdout)
    if done.returncode == 0 and answer and "report" in answer:
        return ValidationReport.from_dict(answer["report"])
    stderr = done.stderr.decode(errors="replace")[-2000:]
    if done.returncode == _MEMORY_EXIT or "MemoryError" in stderr or _killed_by_memory(done.returncode):
        raise ValidationAborted(memory_message(child.memory_bytes))
    if done.returncode == -signal.SIGXCPU:
        raise ValidationAborted(timeout_message(child.timeout_seconds))
    logger.error("dataset validation child failed with status %s:\n%s", done.returncode, stderr)
    raise ValidationAborted(f"validation failed unexpectedly (child exit status {done.returncode})")


def _killed_by_memory(returncode: int) -> bool:
    # Under RLIMIT_AS an allocation fails; C++ code that does not expect it aborts, or touches what it
    # did not get. (The kernel's OOM killer sends SIGKILL.)
    return returncode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS, -signal.SIGKILL)


def _answer(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _child_environment() -> dict[str, str]:
    """What the child needs and nothing more: no database URL, secret key or tokens."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join((str(_PLATFORM_DIR), str(_REPO_DIR))),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        # Arrow's default allocators reserve large address ranges up front, which RLIMIT_AS counts;
        # the system allocator reserves only what it hands out. One thread each: less to reserve.
        "ARROW_DEFAULT_MEMORY_POOL": "system",
        "OMP_NUM_THREADS": "1",
        "ARROW_IO_THREADS": "1",
    }


# --- the child -----------------------------------------------------------------------------------


def _limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    limits = [
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 5),
        (resource.RLIMIT_FSIZE, 0, 0),  # it reads; it has nothing to write to disk
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as error:  # macOS refuses RLIMIT_AS; Linux (production) does not
            print(f"validate_child: cannot set resource limit {which}: {error}", file=sys.stderr)


def _write(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    _limit_resources(request["memory_bytes"], request["cpu_seconds"])
    try:
        from refinery.data.validation import validate_file

        report = validate_file(
            request["path"],
            format=request["format"],
            kind=request["kind"],
            limits=DecodeLimits(**request["limits"]),
            max_errors=request["max_errors"],
            max_line_bytes=request["max_line_bytes"],
        )
        answer = {"report": report.to_dict()}
        _write(answer)
    except MemoryError:  # Arrow's allocation failures are MemoryErrors too
        answer = None  # let go of whatever was built before writing anything more
        _write({"failure": "memory"})
        return _MEMORY_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
