"""Run the chaos session: `python -m tests.chaos.launch [pytest args...]` (make chaos does this).

Starts a private PostgreSQL and Redis (tests/chaos/services.py) in a tmp dir, points
DATABASE_URL / CELERY_BROKER_URL at them, runs `python -m pytest tests/chaos [args]` as a
child, and always stops both and removes the tmp dir afterwards (Ctrl-C and SIGTERM too).

Two adjustments keep `make test PYTEST_ARGS=...` (which runs this after the main session)
working: a `--junitxml` path gets a `-chaos` suffix, so the main session's report is not
overwritten, and "no tests collected" (exit 5, say under a `-k` that picks none of these)
counts as success.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.services import PrivatePostgres, PrivateRedis, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_TESTS_COLLECTED = 5


class _Terminated(BaseException):
    """Raised by the SIGTERM handler, so that the cleanup in `main` runs."""


def _chaos_junitxml(args: list[str]) -> list[str]:
    """--junitxml=dir/junit.xml -> --junitxml=dir/junit-chaos.xml (both spellings, = or separate)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        previous = args[i - 1] if i else ""
        if previous in ("--junitxml", "--junit-xml"):
            arg = re.sub(r"(\.xml)?$", r"-chaos\1", arg, count=1)
        elif arg.startswith(("--junitxml=", "--junit-xml=")):
            arg = re.sub(r"(\.xml)?$", r"-chaos\1", arg, count=1)
        out.append(arg)
    return out


def _finish(child: subprocess.Popen, grace: float = 10) -> None:
    """Give pytest `grace` seconds to tear down (a terminal's Ctrl-C reached it too), then insist."""
    for send in (None, child.terminate, child.kill):
        if send is not None:
            send()
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass


def _names_other_tests(args: list[str]) -> bool:
    """True when the arguments name test paths outside tests/chaos (``make test PYTEST_ARGS=tests/runs``)."""
    chaos = (REPO_ROOT / "tests" / "chaos").resolve()
    for arg in args:
        path = Path(arg.split("::")[0])
        if not arg.startswith("-") and (REPO_ROOT / path).exists():
            resolved = (REPO_ROOT / path).resolve()
            if resolved != chaos and chaos not in resolved.parents:
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = _chaos_junitxml(sys.argv[1:] if argv is None else argv)
    if _names_other_tests(args):
        print("chaos: skipped (the arguments name other tests)", flush=True)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="refinery-chaos-"))
    tmp.chmod(0o711)  # as root, initdb runs as `postgres` and must reach tmp/pg
    postgres = PrivatePostgres(tmp / "pg", free_port())
    redis = PrivateRedis(tmp / "redis", free_port())
    child: subprocess.Popen | None = None

    def on_sigterm(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            child.terminate()
        raise _Terminated

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        started = time.monotonic()
        postgres.start()
        redis.start()
        print(
            f"chaos: private PostgreSQL on :{postgres.port} and Redis on :{redis.port} up in "
            f"{time.monotonic() - started:.1f}s ({tmp})",
            flush=True,
        )
        env = {
            **os.environ,
            **postgres.to_env(),
            **redis.to_env(),
            "DATABASE_URL": postgres.url,
            "CELERY_BROKER_URL": redis.url,
            "REFINERY_CHAOS_RUN": "1",
        }
        child = subprocess.Popen([sys.executable, "-m", "pytest", "tests/chaos", *args], env=env, cwd=REPO_ROOT)
        code = child.wait()
        if code == NO_TESTS_COLLECTED:
            print("chaos: no tests collected (treated as success)", flush=True)
            code = 0
    except KeyboardInterrupt:
        code = 130
    except _Terminated:
        code = 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if child is not None and child.poll() is None:
            _finish(child)
        for service in (redis, postgres):
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001 - still stop the other one and remove tmp
                print(f"chaos: stopping {type(service).__name__} failed: {exc}", file=sys.stderr, flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
