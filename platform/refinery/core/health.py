"""Liveness and readiness endpoints, for load balancers and container health checks.

    GET /healthz   200 {"status": "ok"} while the process serves requests (nothing else is checked)
    GET /readyz    200 when the database, the broker and MLflow answer; 503 naming the one that does not

Both are public (no session, no token), answer only GET/HEAD, are never cached, and are exempt from
the HTTPS redirect (SECURE_REDIRECT_EXEMPT), so a load balancer can probe the plain-HTTP backend.
They tell nothing about teams or data; a failing check is named, its error only logged.
"""

from __future__ import annotations

import logging
import urllib.request

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from refinery.core.tasks import app  # the Celery app the workers use (jobs/app.py configures it)

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    with app.connection_for_write(connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_SECONDS)


def _mlflow() -> None:
    uri = str(settings.MLFLOW_TRACKING_URI or "")
    if not uri.startswith(("http://", "https://")):
        return  # a local store (file:, sqlite:) has no server to reach
    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CHECK_TIMEOUT_SECONDS) as response:
        if response.status != 200:
            raise RuntimeError(f"MLflow /health answered {response.status}")


CHECKS = {"database": _database, "broker": _broker, "mlflow": _mlflow}


@never_cache
@require_safe
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
            log.warning("readyz: %s is not reachable: %s: %s", name, type(exc).__name__, exc)
            results[name] = "unreachable"
    ready = all(value == "ok" for value in results.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": results}, status=200 if ready else 503)
