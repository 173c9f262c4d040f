"""Production settings: everything from the environment, nothing embedded.

The documented deployment (README "Configuration", docs/security.md) sits behind a reverse
proxy that terminates TLS and sets X-Forwarded-Proto; with it, `manage.py check --deploy`
reports no warnings. Each HTTPS setting can be turned off by its variable for a deployment
that does the job elsewhere; turning one off silences only that setting's deploy check.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import INSECURE_DEV_SECRET_KEY, env_bool

DEBUG = False  # DJANGO_DEBUG is ignored here: a production process never shows the debug pages

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip()
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. The production settings need a long random secret key: "
        "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'` and "
        "set DJANGO_SECRET_KEY in the environment of every web, worker and beat process."
    )
if SECRET_KEY == INSECURE_DEV_SECRET_KEY or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is the insecure development key. Generate a long random key with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
    )
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is too weak: it needs at least 50 characters and 5 different ones. "
        "Generate one with `python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
    )

SILENCED_SYSTEM_CHECKS: list[str] = []

# DJANGO_HTTPS=false: served over plain HTTP (a local trial on 127.0.0.1, as docker-compose.yml
# publishes it): no redirect, no HSTS, cookies without the Secure flag. Not a deployment:
# `check --deploy` then warns, and rightly so.
HTTPS = env_bool("DJANGO_HTTPS", True)

# Behind the proxy, X-Forwarded-Proto tells Django the browser used HTTPS; set
# DJANGO_SECURE_PROXY_SSL_HEADER=false when no proxy sets (and strips) that header.
if HTTPS and env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", True):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = HTTPS and env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
if HTTPS and not SECURE_SSL_REDIRECT:
    SILENCED_SYSTEM_CHECKS.append("security.W008")  # the proxy redirects plain HTTP itself
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", 31536000)) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
if HTTPS and SECURE_HSTS_SECONDS == 0:
    SILENCED_SYSTEM_CHECKS.append("security.W004")  # the proxy sends HSTS itself
if HTTPS and not SECURE_HSTS_INCLUDE_SUBDOMAINS:
    SILENCED_SYSTEM_CHECKS.append("security.W005")
if HTTPS and not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS.append("security.W021")

SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS

# The collected, hashed copies (`manage.py collectstatic` at deploy time), not the source folders.
WHITENOISE_USE_FINDERS = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
REFINERY_REQUIRE_SECRETS_KEY = True  # teams.E001: team secrets need their own key (docs/security.md)
