"""Test settings: real PostgreSQL and Redis by default (URLs from the environment)."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/refinery")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

from .base import *  # noqa: E402,F401,F403
from .base import DATABASES  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
ALLOWED_HOSTS = ["*"]
DATABASES["default"]["CONN_MAX_AGE"] = 0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# One test database per pytest session, so that two sessions on one machine (a developer's
# and CI's, or parallel checkouts) never drop each other's database.
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
REFINERY_SECRETS_KEY = "refinery-test-secrets-key-not-for-production"  # the teams.E001 check wants one with DEBUG off


# Sign-in throttling stays on in the tests (per username and address, as in production), but
# the test client's `login()` has no request for django-axes to look at.
AUTHENTICATION_BACKENDS = [
    "refinery.core.auth_backends.AxesRequestOptionalBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# notify: the webhook tests' receivers listen on 127.0.0.1 (their SSRF tests switch this off again).
REFINERY_WEBHOOK_ALLOW_PRIVATE = True
