"""Team secrets (a team's Hugging Face hub token): encrypted at rest, write-only, decrypted only by the worker.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived with HKDF-SHA256 from
REFINERY_SECRETS_KEY (any long random string). Without it (development), the key is derived from
DJANGO_SECRET_KEY; a system check refuses that when DEBUG is off (refinery.teams.checks). Key rotation:
put the new key in REFINERY_SECRETS_KEY and the old one(s) in REFINERY_SECRETS_OLD_KEYS (comma-separated):
both decrypt, the new one encrypts; `python manage.py rotate_team_secrets` re-encrypts every stored value
under the new key, after which the old keys can be dropped.

Pages and the API only ever see `TeamSecretInfo`-like metadata: the name, who set it and when, and the
value's last four characters. `team_secret_reveal` is for the worker, just before it starts a trainer.
"""

from __future__ import annotations

import base64
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from refinery.teams.models import Team, TeamSecret
from refinery.teams.services import audit

SECRET_NAMES = tuple(TeamSecret.Name.values)
VALUE_RE = re.compile(r"^[A-Za-z0-9_\-.=+/:]+$")
MIN_LENGTH, MAX_LENGTH = 12, 512


class TeamSecretError(Exception):
    """A refused secret (unknown name, malformed value) or one that cannot be decrypted; one clear line."""


def _fernet(key: str) -> Fernet:
    derived = HKDF(algorithm=SHA256(), length=32, salt=b"refinery.teams.secrets", info=b"fernet v1").derive(
        key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(derived))


def secrets_keys() -> list[str]:
    """The keys, current first: REFINERY_SECRETS_KEY (or, in development, DJANGO_SECRET_KEY), then the old ones."""
    current = settings.REFINERY_SECRETS_KEY or settings.SECRET_KEY
    old = [k for k in settings.REFINERY_SECRETS_OLD_KEYS if k and k != current]
    return [current, *old]


def secrets_cipher() -> MultiFernet:
    return MultiFernet([_fernet(k) for k in secrets_keys()])


def _check(name: str, value: str | None = None) -> None:
    if name not in SECRET_NAMES:
        raise TeamSecretError(f"unknown secret {name!r} (known: {', '.join(SECRET_NAMES)})")
    if value is None:
        return
    if not (MIN_LENGTH <= len(value) <= MAX_LENGTH) or not VALUE_RE.match(value):
        raise TeamSecretError(
            f"{name}: a token is {MIN_LENGTH} to {MAX_LENGTH} characters of letters, digits and _ - . = + / : "
            "(no spaces); paste it exactly as the hub shows it"
        )


# --- selectors ---------------------------------------------------------------------


def team_secret_list(*, team: Team) -> QuerySet[TeamSecret]:
    """The team's secrets, for display (use the metadata only: never decrypt in a page)."""
    return TeamSecret.objects.filter(team=team).select_related("created_by", "updated_by").defer("ciphertext")


def team_secret_reveal(*, team: Team | int, name: str) -> str | None:
    """The decrypted value of the team's secret `name`, or None when the team has none. For the worker only."""
    _check(name)
    team_id = team.pk if isinstance(team, Team) else team
    ciphertext = TeamSecret.objects.filter(team_id=team_id, name=name).values_list("ciphertext", flat=True).first()
    if ciphertext is None:
        return None
    try:
        return secrets_cipher().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TeamSecretError(
            f"the team's {name} cannot be decrypted with REFINERY_SECRETS_KEY (was the key changed without "
            "listing the old one in REFINERY_SECRETS_OLD_KEYS?); an owner can set it again"
        ) from None


# --- services ----------------------------------------------------------------------


@transaction.atomic
def team_secret_set(*, team: Team, user, name: str, value: str) -> TeamSecret:
    """Set or replace the team's secret `name` (the caller checked that `user` is an owner)."""
    value = (value or "").strip()
    _check(name, value)
    ciphertext = secrets_cipher().encrypt(value.encode()).decode()
    secret = TeamSecret.objects.select_for_update().filter(team=team, name=name).first()
    replaced = secret is not None
    if secret is None:
        secret = TeamSecret(team=team, name=name, created_by=user)
    secret.ciphertext, secret.last4, secret.updated_by = ciphertext, value[-4:], user
    secret.save()
    audit(team=team, user=user, action="secret.set", target=name, replaced=replaced, ends_with=secret.last4)
    return secret


@transaction.atomic
def team_secret_delete(*, team: Team, user, name: str) -> bool:
    """Delete the team's secret `name`; False when there was none."""
    _check(name)
    deleted, _ = TeamSecret.objects.filter(team=team, name=name).delete()
    if deleted:
        audit(team=team, user=user, action="secret.deleted", target=name)
    return bool(deleted)


@transaction.atomic
def team_secrets_rotate() -> int:
    """Re-encrypt every stored secret under the current key (after a key change); returns how many."""
    cipher = secrets_cipher()
    count = 0
    for secret in TeamSecret.objects.select_for_update():
        try:
            rotated = cipher.rotate(secret.ciphertext.encode()).decode()
        except InvalidToken:
            raise TeamSecretError(
                f"secret {secret.name!r} of team {secret.team_id} cannot be decrypted with any "
                "of the configured keys; nothing was rotated"
            ) from None
        TeamSecret.objects.filter(pk=secret.pk).update(ciphertext=rotated)
        count += 1
    return count
