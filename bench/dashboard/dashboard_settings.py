"""Settings for bench/dashboard: the test settings (PostgreSQL from DATABASE_URL, DEBUG off, plain static
storage) with persistent database connections, as a production web process keeps them."""

from refinery.settings.test import *  # noqa: F401,F403
from refinery.settings.test import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 60
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
