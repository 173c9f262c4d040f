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
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# The embedded default's key: fine on a laptop, refused by the production settings.
INSECURE_DEV_SECRET_KEY = "refinery-insecure-dev-key-change-me"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", INSECURE_DEV_SECRET_KEY)
# Off unless switched on: a DEBUG page shows code, settings and every URL pattern.
DEBUG = env_bool("DJANGO_DEBUG", False)
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
    "csp",
    "axes",
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
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "refinery.teams.middleware.CurrentTeamMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
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
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: a locked-out username (from that address) is refused before its password
# is even checked. API tokens are not passwords and never pass through these backends.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
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
REFINERY_LEASE_SECONDS = float(
    os.environ.get(
        "REFINERY_LEASE_SECONDS", max(REFINERY_HEARTBEAT_SECONDS + 1, 2 * REFINERY_HEARTBEAT_SECONDS - _reaper_seconds)
    )
)
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
# Static files come from the app's folders (no collectstatic needed) with DEBUG on or off;
# the production settings serve the collected, hashed copies instead.
WHITENOISE_USE_FINDERS = True

# Hang detection: a trainer that sends no event (progress, metrics, ...) for this long is killed
# and its stage failed with "stalled at step N" (0 turns it off). Before its `started` event a
# trainer is importing, downloading and loading the model: REFINERY_STARTUP_SECONDS applies then.
REFINERY_STALL_SECONDS = float(os.environ.get("REFINERY_STALL_SECONDS", 900))
REFINERY_STARTUP_SECONDS = float(os.environ.get("REFINERY_STARTUP_SECONDS", 3600))

# --- teamadmin ---
# Invitation links expire after this many days; API tokens may be given at most this many days
# (0 = tokens without an expiry are allowed). The audit log page shows this many events a page.
REFINERY_INVITATION_DAYS = int(os.environ.get("REFINERY_INVITATION_DAYS", 7))
REFINERY_API_TOKEN_MAX_DAYS = int(os.environ.get("REFINERY_API_TOKEN_MAX_DAYS", 0))
REFINERY_AUDIT_PAGE_SIZE = int(os.environ.get("REFINERY_AUDIT_PAGE_SIZE", 50))

# --- input ---
# Untrusted input: request bodies, dataset files, regular expressions.
# Request bodies: a multipart upload may carry REFINERY_MAX_UPLOAD_BYTES of files plus
# DATA_UPLOAD_MAX_MEMORY_SIZE of other fields; any other body at most DATA_UPLOAD_MAX_MEMORY_SIZE.
# Larger ones get 413 before they are read (Content-Length) or while they stream in (the
# upload handler below counts the bytes), so an oversized file never lands on disk whole.
FILE_UPLOAD_HANDLERS = [
    "refinery.core.request_limits.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "refinery.core.request_limits.RequestSizeLimitMiddleware",
)
# Dataset files are validated in a child process with these limits (refinery.data.validate_child).
REFINERY_VALIDATION_MEMORY_BYTES = int(os.environ.get("REFINERY_VALIDATION_MEMORY_BYTES", 1024**3))
REFINERY_VALIDATION_TIMEOUT_SECONDS = float(os.environ.get("REFINERY_VALIDATION_TIMEOUT_SECONDS", 600))
# What a dataset file may decode to (decompression bombs): in all, per value (a Parquet cell),
# per slice of rows held in memory at once (and so per row), and per Parquet row group as declared.
REFINERY_DATASET_MAX_DECODED_BYTES = int(os.environ.get("REFINERY_DATASET_MAX_DECODED_BYTES", 8 * 1024**3))
REFINERY_DATASET_MAX_VALUE_BYTES = int(os.environ.get("REFINERY_DATASET_MAX_VALUE_BYTES", 1_000_000))
REFINERY_DATASET_MAX_BATCH_BYTES = int(os.environ.get("REFINERY_DATASET_MAX_BATCH_BYTES", 64 * 1024**2))
REFINERY_DATASET_MAX_ROW_GROUP_BYTES = int(os.environ.get("REFINERY_DATASET_MAX_ROW_GROUP_BYTES", 2 * 1024**3))

# --- secrets ---
# Team secrets (a team's hub token) are encrypted with a Fernet key derived (HKDF-SHA256) from
# REFINERY_SECRETS_KEY: any long random string, e.g. `python -c "import secrets; print(secrets.token_urlsafe(48))"`.
# Unset, the key is derived from DJANGO_SECRET_KEY: fine for development only; with DEBUG off the system
# check teams.E001 refuses to start under the production settings (REFINERY_REQUIRE_SECRETS_KEY). Rotation: the new key here, the old ones in REFINERY_SECRETS_OLD_KEYS
# (comma-separated), then `python manage.py rotate_team_secrets`.
REFINERY_SECRETS_KEY = os.environ.get("REFINERY_SECRETS_KEY", "")
REFINERY_REQUIRE_SECRETS_KEY = False  # True in settings.production
REFINERY_SECRETS_OLD_KEYS = [k.strip() for k in os.environ.get("REFINERY_SECRETS_OLD_KEYS", "").split(",") if k.strip()]

# --- quotas ---
# Default per-team limits for teams without a TeamQuota row (an operator sets a team's own limits in
# the admin or with `manage.py team_quota`). Unset or empty means no limit.
#   REFINERY_QUOTA_RUNNING_STAGES  stages of one team running at once (claim time: the rest wait queued)
#   REFINERY_QUOTA_QUEUED_RUNS     unfinished (queued or running) runs of one team (refused when queuing)
#   REFINERY_QUOTA_STAGE_SECONDS   wall-clock budget of one stage from its first start (then it is stopped)
#   REFINERY_QUOTA_STORAGE_BYTES   total size of one team's dataset versions (refused at upload); "50GiB" works


def _quota_env(name: str, *, size: bool = False) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    units = (
        {
            "": 1,
            "b": 1,
            "kb": 1000,
            "mb": 1000**2,
            "gb": 1000**3,
            "tb": 1000**4,
            "kib": 1024,
            "mib": 1024**2,
            "gib": 1024**3,
            "tib": 1024**4,
        }
        if size
        else {"": 1}
    )
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    unit = raw[len(number) :].strip().lower()
    if unit not in units or not number.strip():
        raise ValueError(
            f"{name}={raw!r}: expected a whole number" + (" with an optional unit (GiB, GB...)" if size else "")
        )
    return int(float(number) * units[unit])


REFINERY_QUOTA_RUNNING_STAGES = _quota_env("REFINERY_QUOTA_RUNNING_STAGES")
REFINERY_QUOTA_QUEUED_RUNS = _quota_env("REFINERY_QUOTA_QUEUED_RUNS")
REFINERY_QUOTA_STAGE_SECONDS = _quota_env("REFINERY_QUOTA_STAGE_SECONDS")
REFINERY_QUOTA_STORAGE_BYTES = _quota_env("REFINERY_QUOTA_STORAGE_BYTES", size=True)

# --- defaults ---
# Safe defaults that hold in every mode; production.py adds HTTPS-only cookies, HSTS and the
# SSL redirect. See docs/security.md.
from datetime import timedelta  # noqa: E402

from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE  # noqa: E402

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # pages send the token in hx-headers, never read from the cookie
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content Security Policy (django-csp 4). Scripts: our own files, plus inline ones that carry
# the request's nonce (`nonce="{{ request.csp_nonce }}"`); no eval (htmx runs with
# allowEval false). Styles: our own files; inline style="" attributes stay allowed because
# progress bars and timelines position themselves with them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "base-uri": [SELF],
        "object-src": [NONE],
    },
}

# Sign-in throttling (django-axes): REFINERY_LOGIN_FAILURE_LIMIT wrong passwords for one
# username from one address within the cool-off lock that pair out for the cool-off (the
# next attempt is refused even with the right password); a successful sign-in resets the count.
AXES_ENABLED = env_bool("REFINERY_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = int(os.environ.get("REFINERY_LOGIN_FAILURE_LIMIT", 10))
AXES_COOLOFF_TIME = timedelta(seconds=float(os.environ.get("REFINERY_LOGIN_COOLOFF_SECONDS", 900)))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# Behind N reverse proxies that append to X-Forwarded-For, set N: the throttle then counts per
# real client address instead of per proxy.
REFINERY_TRUSTED_PROXY_COUNT = int(os.environ.get("REFINERY_TRUSTED_PROXY_COUNT", 0))
AXES_CLIENT_IP_CALLABLE = "refinery.core.auth_backends.client_ip"

# --- models ---
# Local base models are read only from these folders (checked after resolving symlinks and ".."):
# REFINERY_MODEL_ROOTS lists absolute folders (separated by os.pathsep or commas); "{team}" in one
# becomes the team's id, giving each team a folder of its own. Unset: VAR_DIR/models/{team}.
# Uploaded models go to the first root that names "{team}".
REFINERY_MODEL_ROOTS = [
    p.strip()
    for p in os.environ.get("REFINERY_MODEL_ROOTS", "").replace(",", os.pathsep).split(os.pathsep)
    if p.strip()
]
# Checkpoints a retry of a stage resumes from: CHECKPOINT_DIR/<team id>/<opaque token per stage>/
# (outside every model root; removed when the stage ends). Unset: VAR_DIR/checkpoints.
REFINERY_CHECKPOINT_DIR = Path(os.environ.get("REFINERY_CHECKPOINT_DIR") or VAR_DIR / "checkpoints")
# Model archives (.zip, .tar, .tar.gz): at most this many bytes once extracted, and this many members.
REFINERY_MAX_MODEL_UPLOAD_BYTES = int(os.environ.get("REFINERY_MAX_MODEL_UPLOAD_BYTES", 20 * 1024**3))
REFINERY_MAX_MODEL_UPLOAD_MEMBERS = int(os.environ.get("REFINERY_MAX_MODEL_UPLOAD_MEMBERS", 1000))

# --- proof ---
# Input the database cannot store (a NUL character; a number out of range) gets 400, not a 500.
# Before AxesMiddleware, which must stay last (django-axes).
MIDDLEWARE.insert(
    MIDDLEWARE.index("axes.middleware.AxesMiddleware"), "refinery.core.middleware.RejectUnstorableInputMiddleware"
)

# --- notify ---
# Notifications (refinery.notifications): signed webhooks and email, delivered by the cpu worker.
INSTALLED_APPS.append("refinery.notifications")
# A webhook URL whose host resolves to a loopback, private or link-local address is refused (SSRF) unless
# this is on (a receiver on the operator's own network).
REFINERY_WEBHOOK_ALLOW_PRIVATE = env_bool("REFINERY_WEBHOOK_ALLOW_PRIVATE", False)
REFINERY_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("REFINERY_WEBHOOK_TIMEOUT_SECONDS", 5))
# Attempts per event and endpoint, and the waits between them (seconds; the last one repeats).
REFINERY_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("REFINERY_WEBHOOK_MAX_ATTEMPTS", 6))
REFINERY_WEBHOOK_BACKOFF_SECONDS = [
    float(s) for s in os.environ.get("REFINERY_WEBHOOK_BACKOFF_SECONDS", "10,30,90,270,810").split(",") if s.strip()
]
# How often beat sends due attempts (retries, and any wake-up a lost message left behind).
REFINERY_NOTIFY_POLL_SECONDS = int(os.environ.get("REFINERY_NOTIFY_POLL_SECONDS", 10))
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "refinery@localhost")

# --- schedules ---
# Schedules (docs/schedules.md): beat runs jobs.schedules_tick this often (seconds); a window fires at most
# this late, so the period is the worst-case delay of a scheduled run.
INSTALLED_APPS.append("refinery.schedules")
REFINERY_SCHEDULE_TICK_SECONDS = max(1, int(os.environ.get("REFINERY_SCHEDULE_TICK_SECONDS", 5)))  # whole seconds

# --- i17 docker ---
# /healthz and /readyz (refinery.core.health) answer over plain HTTP too: a load balancer or a container
# health check probes the backend directly, in front of the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
