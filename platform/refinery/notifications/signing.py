"""Webhook signatures: `X-Refinery-Signature: sha256=<hex>` where hex is HMAC-SHA256, keyed with the
endpoint's secret, of f"{timestamp}.{body}" (timestamp: `X-Refinery-Timestamp`, whole Unix seconds; body:
the raw request body bytes). Receivers verify with `signature_verify` (or the same few lines, see
docs/notifications.md) and refuse old timestamps to stop replays."""

from __future__ import annotations

import hashlib
import hmac
import time


def signature_compute(*, secret: str, timestamp: int | str, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_verify(
    *, secret: str, timestamp: str, body: bytes, signature: str, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """True when `signature` is this body's and timestamp's under `secret`, and the timestamp is within
    `tolerance_s` seconds of now (0: no age check)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if tolerance_s and abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = signature_compute(secret=secret, timestamp=ts, body=body)
    return hmac.compare_digest(expected, str(signature or ""))
