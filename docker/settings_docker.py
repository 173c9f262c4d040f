"""Settings for the container images: production settings, static files baked into the image.

refinery.settings.base puts STATIC_ROOT under REFINERY_VAR_DIR, which in
docker-compose.yml is a shared volume mounted at run time; it would hide files
collected at build time. The images collect static files into /app/staticfiles
instead. (Once base.py reads STATIC_ROOT from the environment, this module can go.)
"""
from refinery.settings.production import *  # noqa: F401,F403

STATIC_ROOT = "/app/staticfiles"
