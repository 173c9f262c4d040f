"""Buffered metric logging: points are spooled to disk and leave in one `log_batch` per flush.

One `log_metric` call costs a round trip (tens of milliseconds); a `log_batch` of
a thousand points costs little more (see bench/bench_mlflow_batching.py). The buffer also
rides out an MLflow outage: points wait in an append-only file on disk (memory stays
small however long MLflow is away), a failed flush keeps them, and the next flush, after a
growing pause, sends them again (MLflow keeps one copy of an exact duplicate, so a retried
batch that did arrive the first time does no harm). The disk stays bounded: past
`max_points` waiting points the oldest are dropped, counted and reported.

Given a `spool_path`, the spool outlives the process: a later buffer on the same path (the
next attempt of a stage whose worker died) first delivers what the dead one had not, and
`prior_steps` tells it, per metric, the last step already accepted for delivery, so that a
stage resumed from an older checkpoint does not send the replayed steps twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's own limit for one log_batch


@dataclass(frozen=True)
class Point:
    key: str
    value: float
    step: int
    timestamp_ms: int


class _Spool:
    """An append-only NDJSON file of points, a cursor file (byte offset of the oldest unsent point)
    and a marks file (per metric, the highest step ever accepted). Not thread-safe: the buffer locks."""

    def __init__(self, path: Path | None):
        self.temporary = path is None
        if path is None:
            fd, name = tempfile.mkstemp(prefix="refinery-metrics-", suffix=".ndjson")
            os.close(fd)
            path = Path(name)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cursor_path = self.path.with_name(self.path.name + ".cursor")
        self.marks_path = self.path.with_name(self.path.name + ".marks")
        self.marks: dict[str, int] = {}
        try:
            self.marks = {str(k): int(v) for k, v in json.loads(self.marks_path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            pass
        self._fh = open(self.path, "a+b")  # noqa: SIM115 - open for the buffer's lifetime
        self.cursor = 0
        try:
            self.cursor = int(self.cursor_path.read_text().strip() or 0)
        except (OSError, ValueError):
            pass
        self.pending = 0
        self._recover()

    def _recover(self) -> None:
        """Count the unsent points, learn the marks of all points on file, cut a torn last line."""
        self._fh.seek(0)
        data = self._fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the process died mid-write: drop the partial line
            self._fh.truncate(end)
            data = data[:end]
        self.cursor = min(max(0, self.cursor), end)
        offset = 0
        for line in data.splitlines(keepends=True):
            point = self._parse(line)
            if point is not None:
                self.marks[point.key] = max(self.marks.get(point.key, point.step), point.step)
                if offset >= self.cursor:
                    self.pending += 1
            offset += len(line)

    @staticmethod
    def _parse(line: bytes) -> Point | None:
        try:
            key, value, step, ts = json.loads(line)
            return Point(str(key), float(value), int(step), int(ts))
        except (ValueError, TypeError):
            return None

    def append(self, points: list[Point]) -> None:
        self._fh.write(b"".join(json.dumps([p.key, p.value, p.step, p.timestamp_ms]).encode() + b"\n" for p in points))
        self._fh.flush()  # in the kernel: survives the death of this process
        self.pending += len(points)
        for p in points:
            self.marks[p.key] = max(self.marks.get(p.key, p.step), p.step)

    def peek(self, n: int) -> tuple[list[Point], int]:
        """Up to n unsent points, oldest first, and the offset just past them."""
        self._fh.seek(self.cursor)
        points, offset = [], self.cursor
        while len(points) < n:
            line = self._fh.readline()
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            point = self._parse(line)
            if point is not None:
                points.append(point)
        return points, offset

    def advance(self, offset: int, count: int) -> None:
        """Mark everything before `offset` (`count` points) as sent or dropped."""
        self.cursor = offset
        self.pending = max(0, self.pending - count)
        size = self._fh.seek(0, os.SEEK_END)
        if self.cursor >= size:  # all sent: start the file over
            self._write_marks()
            self._fh.truncate(0)
            self.cursor = 0
        self._write_cursor()

    def _write_cursor(self) -> None:
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        tmp.write_text(str(self.cursor))
        os.replace(tmp, self.cursor_path)

    def _write_marks(self) -> None:
        tmp = self.marks_path.with_name(self.marks_path.name + ".tmp")
        tmp.write_text(json.dumps(self.marks))
        os.replace(tmp, self.marks_path)

    def close(self) -> None:
        self._fh.close()
        if self.temporary:
            for path in (self.path, self.cursor_path, self.marks_path):
                path.unlink(missing_ok=True)
        else:
            self._write_marks()


class MetricBuffer:
    """Collects metric points of one MLflow run and sends them with log_batch from a thread.

    `add()` never blocks on the network and never raises because MLflow is down. The
    background thread flushes every `flush_seconds` or as soon as `flush_points` are
    waiting; `close()` drains what is left, retrying until `close_timeout` seconds.
    Points wait in `spool_path` (a temporary file when not given).
    """

    def __init__(
        self,
        *,
        run_id: str,
        tracking_uri: str | None = None,
        client=None,
        flush_seconds: float = 2.0,
        flush_points: int = 500,
        max_points: int = 1_000_000,
        retry_min_seconds: float = 1.0,
        retry_max_seconds: float = 30.0,
        spool_path: str | os.PathLike | None = None,
    ):
        if client is None:
            from refinery.tracking.client import tracking_client

            client = tracking_client(tracking_uri)
        self.client = client
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.flush_points = max(1, min(flush_points, MAX_METRICS_PER_BATCH))
        self.max_points = max_points
        self.retry_min_seconds = retry_min_seconds
        self.retry_max_seconds = retry_max_seconds
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str = ""
        self._spool = _Spool(Path(spool_path) if spool_path is not None else None)
        self.prior_steps: dict[str, int] = dict(self._spool.marks)  # what earlier buffers on this spool accepted
        self.recovered = self._spool.pending  # unsent points an earlier buffer left behind
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()  # one log_batch in flight at a time
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- producer side ----------------------------------------------------------
    def add(self, key: str, value: float | None, step: int, timestamp: float | None = None) -> bool:
        """Queue one point (`timestamp` in unix seconds); None and non-finite values are skipped."""
        if value is None:
            return False
        value = float(value)
        if not math.isfinite(value):
            return False
        ts = int((timestamp if timestamp is not None else time.time()) * 1000)
        with self._cond:
            self._spool.append([Point(key, value, int(step), ts)])
            overflow = self._spool.pending - self.max_points
            if overflow > 0:
                oldest, offset = self._spool.peek(overflow)
                self._spool.advance(offset, len(oldest))
                self.dropped += len(oldest)
                if self.dropped == len(oldest):
                    log.warning(
                        "metric buffer for run %s is full (%d points); dropping the oldest",
                        self.run_id,
                        self.max_points,
                    )
            if self._spool.pending >= self.flush_points:
                self._cond.notify_all()
        return True

    @property
    def pending(self) -> int:
        with self._cond:
            return self._spool.pending

    # -- sending ----------------------------------------------------------------
    def flush(self) -> bool:
        """Send up to 1000 waiting points in one log_batch. True if nothing is left unsent by it."""
        from mlflow.entities import Metric

        with self._send_lock:
            with self._cond:
                batch, offset = self._spool.peek(MAX_METRICS_PER_BATCH)
                cursor = self._spool.cursor
            if not batch:
                return True
            try:
                self.client.log_batch(
                    self.run_id,
                    metrics=[Metric(p.key, p.value, p.timestamp_ms, p.step) for p in batch],
                    synchronous=True,
                )
            except Exception as exc:  # noqa: BLE001 - any failure means: keep the points, try later
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning(
                        "MLflow log_batch for run %s failed (%d failures so far, %d points kept): %s",
                        self.run_id,
                        self.failures,
                        self.pending,
                        self.last_error,
                    )
                return False
            with self._cond:
                # The points sent are the oldest ones, unless the overflow dropped some meanwhile.
                if self._spool.cursor == cursor:
                    self._spool.advance(offset, len(batch))
                self.sent += len(batch)
            return True

    def start(self) -> MetricBuffer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"mlflow-metrics-{self.run_id[:8]}", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                wait = backoff or self.flush_seconds
                deadline = time.monotonic() + wait
                while not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (not backoff and self._spool.pending >= self.flush_points):
                        break
                    self._cond.wait(remaining)
                if self._closing:
                    return
            if self.flush():
                backoff = 0.0
            else:
                backoff = min(self.retry_max_seconds, max(self.retry_min_seconds, backoff * 2))

    def close(self, timeout: float = 60.0) -> int:
        """Stop the thread and send everything left, retrying for up to `timeout` seconds.

        Returns the number of points that could not be delivered (0 when all arrived).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        backoff = self.retry_min_seconds
        while self.pending and time.monotonic() < deadline:
            if self.flush():
                continue
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(self.retry_max_seconds, backoff * 2)
        left = self.pending
        if left:
            log.error("gave up sending %d metric points to MLflow run %s: %s", left, self.run_id, self.last_error)
        with self._cond:
            self._spool.close()
        return left

    def __enter__(self) -> MetricBuffer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
