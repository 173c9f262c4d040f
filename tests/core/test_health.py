"""/healthz (liveness) and /readyz (database, broker and MLflow reachable): public, GET only, never cached,
exempt from the HTTPS redirect. The real PostgreSQL and Redis of the test settings; MLflow is a tiny
HTTP server of the test's own (its /health answers as the real one's does) or a closed port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from jobs.app import app
from tests.conftest import free_port


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"OK" if self.path == "/health" and self.status == 200 else b"no"
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mlflow_health(settings):
    """An HTTP server whose /health answers like MLflow's; MLFLOW_TRACKING_URI points at it."""
    handler = type("Handler", (_Health,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_healthz_answers_anyone_without_touching_the_database(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_ready_when_database_broker_and_mlflow_answer(db, mlflow_health):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "mlflow": "ok"}}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_names_mlflow_when_it_is_down(db, settings):
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "ok", "mlflow": "unreachable"},
    }


def test_readyz_names_mlflow_when_its_health_fails(db, mlflow_health):
    mlflow_health.status = 503
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "mlflow": "unreachable"}


def test_readyz_names_the_broker_when_it_is_down(db, mlflow_health, monkeypatch):
    # Celery reads CELERY_BROKER_URL from the environment before its own settings.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert app.conf.broker_write_url.startswith("redis://127.0.0.1:") and ":6379/" not in app.conf.broker_write_url
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "unreachable", "mlflow": "ok"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_only_get_and_head(db, mlflow_health, path):
    assert Client().head(path).status_code == 200
    assert Client().post(path).status_code == 405


def test_exempt_from_the_https_redirect(db, settings, mlflow_health):
    """A load balancer probes the backend over plain HTTP, also when the production settings redirect to HTTPS."""
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    assert client.get("/login/").status_code == 301
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
