"""Refinery settings, driven by the environment.

With no environment at all this is the embedded default that `make run` uses on
a bare laptop: SQLite (WAL) under var/, kombu's filesystem broker under var/,
and an MLflow server that `make run` starts on 127.0.0.1:5000 with a SQLite
store. Set DATABASE_URL, CELERY_BROKER_URL and MLFLOW_TRACKING_URI to use
PostgreSQL, Redis (or RabbitMQ) and a remote MLflow instead.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parents[3]
VAR_DIR = Path(os.environ.get("REFINERY_VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _code_version() -> str:
    explicit = os.environ.get("REFINERY_CODE_VERSION")
    if explicit:
        return explicit
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=BASE_DIR, capture_output=True,
            text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=BASE_DIR,
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "refinery-insecure-dev-key-change-me")
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "refinery.core",
    "refinery.teams",
    "refinery.data",
    "refinery.basemodels",
    "refinery.pipelines",
    "refinery.runs",
    "refinery.sweeps",
    "refinery.registry",
    "refinery.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "refinery.teams.middleware.CurrentTeamMiddleware",
]

ROOT_URLCONF = "refinery.urls"
WSGI_APPLICATION = "refinery.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "refinery.teams.context_processors.teams",
            ],
        },
    }
]

DEFAULT_SQLITE = f"sqlite:///{VAR_DIR / 'refinery.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL", DEFAULT_SQLITE), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the web, the worker and beat read while one of them writes.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "runs:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("REFINERY_STATIC_ROOT", VAR_DIR / "staticfiles"))

# Uploads: spool to disk above 2 MiB, stream-validated, then stored by sha256.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
REFINERY_MAX_UPLOAD_BYTES = int(os.environ.get("REFINERY_MAX_UPLOAD_BYTES", 2 * 1024**3))
REFINERY_DATASET_DIR = VAR_DIR / "datasets"
REFINERY_WORK_DIR = VAR_DIR / "work"
REFINERY_CODE_VERSION = _code_version()

# Celery. The database row is the source of truth; a message is a wake-up call.
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Longer than any stage: a running stage is never redelivered to another
    # worker; lost work is found by the lease reaper instead.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": int(os.environ.get("REFINERY_VISIBILITY_TIMEOUT", 7 * 24 * 3600)),
    }
    if os.environ.get("REFINERY_BROKER_KEYPREFIX"):
        # Every Redis key of this deployment starts with it: several deployments (or test
        # sessions) can share one Redis without seeing each other's queues.
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = os.environ["REFINERY_BROKER_KEYPREFIX"]
# A task message is only a wake-up: the stage row is the job. Workers take a message off the
# broker when they start it (early ack) and reserve nothing while busy (no prefetch on Redis),
# so a stage that runs for days is never redelivered by a visibility timeout or cut off by a
# consumer timeout. What a lost message or a dead worker would lose, the reaper restores from
# the database: expired leases are requeued, and queued stages are re-sent every
# REFINERY_REDISPATCH_SECONDS until a worker claims them (a duplicate finds the stage claimed).
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_DISABLE_PREFETCH = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Execution: leases and heartbeats (seconds).
# The reaper looks about twice per heartbeat (whole seconds: 2 s by default), and a lease lasts two
# heartbeats less one reaper pass (8 s), so a dead worker's stage is requeued within two heartbeat
# intervals (10 s) of its last renewal. While training, renewals come about every second.
REFINERY_HEARTBEAT_SECONDS = float(os.environ.get("REFINERY_HEARTBEAT_SECONDS", 5))
_reaper_seconds = max(1, int(REFINERY_HEARTBEAT_SECONDS / 2))  # as jobs.app.reaper_interval_seconds()
REFINERY_LEASE_SECONDS = float(os.environ.get(
    "REFINERY_LEASE_SECONDS", max(REFINERY_HEARTBEAT_SECONDS + 1, 2 * REFINERY_HEARTBEAT_SECONDS - _reaper_seconds)))
REFINERY_REDISPATCH_SECONDS = float(os.environ.get("REFINERY_REDISPATCH_SECONDS", 300))
# How long a supervisor waits out a database outage (PostgreSQL restarting) before giving up.
REFINERY_DB_OUTAGE_SECONDS = float(os.environ.get("REFINERY_DB_OUTAGE_SECONDS", 600))
REFINERY_CANCEL_GRACE_SECONDS = float(os.environ.get("REFINERY_CANCEL_GRACE_SECONDS", 6))
REFINERY_TRAINER_PYTHON = os.environ.get("REFINERY_TRAINER_PYTHON", "")  # default: sys.executable
# How long a finished stage keeps retrying to deliver buffered metrics to a down MLflow.
REFINERY_METRICS_DRAIN_SECONDS = float(os.environ.get("REFINERY_METRICS_DRAIN_SECONDS", 60))

# MLflow: private to the platform; pages and the API never hand the browser its address.
MLFLOW_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
MLFLOW_EXPERIMENT_PREFIX = os.environ.get("MLFLOW_EXPERIMENT_PREFIX", "refinery")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("REFINERY_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
WHITENOISE_USE_FINDERS = DEBUG

# Hang detection: a trainer that sends no event (progress, metrics, ...) for this long is killed
# and its stage failed with "stalled at step N" (0 turns it off). Before its `started` event a
# trainer is importing, downloading and loading the model: REFINERY_STARTUP_SECONDS applies then.
REFINERY_STALL_SECONDS = float(os.environ.get("REFINERY_STALL_SECONDS", 900))
REFINERY_STARTUP_SECONDS = float(os.environ.get("REFINERY_STARTUP_SECONDS", 3600))

# --- proof ---
# Input the database cannot store (a NUL character; a number out of range) gets 400, not a 500.
MIDDLEWARE += ["refinery.core.middleware.RejectUnstorableInputMiddleware"]
