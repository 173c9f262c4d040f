"""Container health checks for docker/docker-compose.yml (exit 0 healthy, 1 not; one line on stdout).

    python docker/healthcheck.py http URL          GET URL answers 2xx (web: /readyz, mlflow: /health)
    python docker/healthcheck.py worker PREFIX     the Celery worker PREFIX@<this host> answers a ping
    python docker/healthcheck.py beat              the database and the broker beat writes to are reachable

The HTTP check sends the first of DJANGO_ALLOWED_HOSTS as Host (Django refuses unknown hosts)
(/healthz and /readyz are exempt from the production settings' HTTPS redirect).
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request


def check_http(url: str) -> str:
    hosts = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = next((h.lstrip(".") for h in hosts if h != "*"), None)
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(request, timeout=8) as response:
        return f"{url}: {response.status}"


def check_worker(prefix: str) -> str:
    from jobs.app import app

    node = f"{prefix}@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=5)
    if not any(node in reply for reply in replies):
        raise RuntimeError(f"worker {node} did not answer a ping")
    return f"worker {node}: pong"


def check_beat() -> str:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from kombu import Connection

    connection.ensure_connection()
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=5) as broker:
        broker.ensure_connection(max_retries=1)
    return "beat: database and broker reachable"


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["http"] and len(argv) == 2:
            print(check_http(argv[1]))
        elif argv[:1] == ["worker"] and len(argv) == 2:
            print(check_worker(argv[1]))
        elif argv == ["beat"]:
            print(check_beat())
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, urllib.error.URLError, RuntimeError, Exception) as exc:  # any failure is "unhealthy"
        print(f"unhealthy: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
