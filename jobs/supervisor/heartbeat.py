"""The heartbeat: a thread that keeps the stage's lease, reports progress and sees a cancel request.

For as long as the stage is ours (downloads and uploads can outlast a lease, not only training) it
renews the lease at least every REFINERY_HEARTBEAT_SECONDS, sends progress as soon as it changes
(once a second at most), and looks for a cancel request every second. It only raises flags
(`cancel_requested`, `lease_lost`); the supervisor acts on them.

Beat's reaper task waits in the cpu queue, where busy workers do not look: when every worker is
training, the supervisors' heartbeats do its work (reaping and re-sending are safe to run from many
places at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection

from jobs.supervisor.retrying import DB_ERRORS, one_line, with_own_connection
from refinery.runs import selectors, services

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 1.0  # a cancel is seen within a second, whatever the heartbeat interval


class Heartbeat:
    def __init__(
        self,
        *,
        stage_run_id: int,
        worker: str,
        attempt: int,
        progress: Callable[[], tuple[int, int | None, float | None]],
    ):
        """`progress()` reads (step, total steps, epoch) from the trainer's state."""
        self.stage_run_id = stage_run_id
        self.worker = worker
        self.attempt = attempt
        self.progress = progress
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self.cancel_seen_at: float | None = None  # monotonic, when the cancel request was seen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cancel_pending(self) -> bool:
        return selectors.stage_cancel_requested(stage_run_id=self.stage_run_id)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=with_own_connection(self._beat), name=f"heartbeat-{self.stage_run_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _beat(self) -> None:
        from jobs.app import reaper_interval_seconds

        interval = float(settings.REFINERY_HEARTBEAT_SECONDS)
        next_beat = time.monotonic()  # renew at once: the claim's lease started before this thread did
        reap_every = reaper_interval_seconds()
        next_reap = time.monotonic() + reap_every
        sent_step = -1
        pause = 0.0
        while not self._stop.wait(pause):
            pause = min(CANCEL_POLL_SECONDS, interval)
            try:
                step, total, epoch = self.progress()
                # Progress moves the live page's bar: send it as soon as it changes (once a
                # second at most), and renew the lease at least every heartbeat interval.
                if time.monotonic() >= next_beat or step != sent_step:
                    next_beat = time.monotonic() + interval
                    sent_step = step
                    ours, cancel = services.stage_heartbeat(
                        stage_run_id=self.stage_run_id,
                        worker=self.worker,
                        attempt=self.attempt,
                        step=step,
                        total_steps=total,
                        epoch=epoch,
                    )
                    if not ours and not self._stop.is_set():
                        log.warning(
                            "stage %s: lease lost (attempt %s is no longer the owner)", self.stage_run_id, self.attempt
                        )
                        self.lease_lost.set()
                elif not self.cancel_requested.is_set():
                    cancel = self.cancel_pending()
                else:
                    cancel = False
                # Reap after renewing our own lease, so that a slow start never reaps this very stage.
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + reap_every
                    services.stage_reap_expired()
                    services.stage_redispatch_stale()
                if cancel and not self.cancel_requested.is_set():
                    self.cancel_seen_at = time.monotonic()
                    self.cancel_requested.set()
            except DB_ERRORS as exc:  # PostgreSQL restarting: a fresh connection on the next beat
                log.warning("stage %s: heartbeat failed: %s", self.stage_run_id, one_line(exc, 200))
                connection.close()
            except Exception:  # noqa: BLE001 - keep beating: the lease has slack
                log.exception("stage %s: heartbeat failed", self.stage_run_id)
                connection.close()
