"""Retrying: MLflow calls for a while, database writes through an outage (on a fresh connection)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_ERRORS = (OperationalError, InterfaceError)


def one_line(text: object, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    timeout: float,
    first_wait: float = 1.0,
    max_wait: float = 30.0,
    errors: tuple[type[BaseException], ...] = (Exception,),
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Call fn until it succeeds, waiting first_wait, twice that ... max_wait between tries; re-raise after
    `timeout` seconds. Only `errors` are retried; `before_retry` runs after each failure."""
    deadline = time.monotonic() + timeout
    wait = first_wait
    while True:
        try:
            return fn()
        except errors as exc:
            if before_retry is not None:
                before_retry()
            if time.monotonic() + wait > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, one_line(exc, 200), wait)
            time.sleep(wait)
            wait = min(max_wait, wait * 2)


def db_retrying(fn: Callable[[], T], *, what: str) -> T:
    """Call fn, retrying on a lost database connection (on a fresh one) for REFINERY_DB_OUTAGE_SECONDS.

    Other errors, such as IllegalTransition, are not retried."""
    return retrying(
        fn,
        what=f"{what} (database unavailable?)",
        timeout=float(settings.REFINERY_DB_OUTAGE_SECONDS),
        first_wait=0.5,
        max_wait=10.0,
        errors=DB_ERRORS,
        before_retry=connection.close,
    )  # this thread's broken connection; the next query opens one


def with_own_connection(target: Callable[[], None]) -> Callable[[], None]:
    """A thread body that logs its crash and closes the DB connection Django opened for the thread."""

    def run() -> None:
        try:
            target()
        except Exception:  # noqa: BLE001 - logged; the main thread decides from the exit status
            log.exception("supervisor thread %s crashed", threading.current_thread().name)
        finally:
            connection.close()

    return run
