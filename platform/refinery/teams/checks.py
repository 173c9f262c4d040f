"""System checks of the teams app."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=False)
def secrets_key_check(app_configs=None, **kwargs) -> list[Error]:
    """In production (REFINERY_REQUIRE_SECRETS_KEY, set by the production settings) team secrets need their own
    key: deriving it from DJANGO_SECRET_KEY is only for development (rotating the Django key would then make every
    stored hub token unreadable)."""
    if not getattr(settings, "REFINERY_REQUIRE_SECRETS_KEY", False) or getattr(settings, "REFINERY_SECRETS_KEY", ""):
        return []
    return [
        Error(
            "REFINERY_SECRETS_KEY is not set: team secrets (hub tokens) would be encrypted with a key derived from "
            "DJANGO_SECRET_KEY.",
            hint='Set REFINERY_SECRETS_KEY to a long random string, e.g. python -c "import secrets; '
            'print(secrets.token_urlsafe(48))", and keep it (losing it makes stored hub tokens unreadable).',
            id="teams.E001",
        )
    ]
