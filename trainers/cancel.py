"""Graceful cancellation: SIGTERM asks the running stage to stop at the end of its current step."""

import signal
import threading

__all__ = ["install_sigterm_handler", "request_cancel", "cancel_requested", "reset"]

_requested = threading.Event()


def request_cancel() -> None:
    _requested.set()


def cancel_requested() -> bool:
    return _requested.is_set()


def reset() -> None:
    _requested.clear()


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _requested.set()


def install_sigterm_handler() -> None:
    """Turn SIGTERM into a cancel request (call from the main thread of the trainer process)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
