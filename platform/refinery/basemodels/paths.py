"""Where a team's local base models may live: the operator's model roots (REFINERY_MODEL_ROOTS).

A local path is accepted only when, after resolving symlinks and "..", it is a folder with a
config.json inside one of the team's roots, and nothing in it links outside that root. Every
refusal gives the same message, so that an error never tells which paths exist on the server.
The check runs when a model is registered and again on the worker before a stage reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core import checks

TEAM_PLACEHOLDER = "{team}"
MAX_ENTRIES = 10_000  # entries looked at for links out of the root; a model folder has a few dozen


class ModelPathRefused(Exception):
    """The one message for every local path that is not allowed (or does not exist)."""

    def __init__(self, team_id: int):
        roots = ", ".join(str(root) for root in model_roots(team_id)) or "none configured"
        super().__init__(
            f"not a model folder (with a config.json) inside this team's model roots ({roots}); "
            "upload the model, or ask an operator to place it there"
        )


def _templates() -> list[str]:
    configured = list(getattr(settings, "REFINERY_MODEL_ROOTS", None) or [])
    return configured or [str(Path(settings.VAR_DIR) / "models" / TEAM_PLACEHOLDER)]


def model_roots(team_id: int) -> list[Path]:
    """The team's model roots, absolute and with "{team}" filled in (they need not exist yet)."""
    return [Path(template.replace(TEAM_PLACEHOLDER, str(int(team_id)))) for template in _templates()]


def team_upload_root(team_id: int) -> Path | None:
    """Where the team's uploads go: the first root that is the team's own ("{team}" in it); None if none is."""
    for template in _templates():
        if TEAM_PLACEHOLDER in template:
            return Path(template.replace(TEAM_PLACEHOLDER, str(int(team_id))))
    return None


def _private_areas() -> list[Path]:
    """Folders no model path may point into whatever the roots say: stage work dirs, checkpoints, datasets."""
    return [
        Path(settings.REFINERY_WORK_DIR),
        Path(settings.REFINERY_CHECKPOINT_DIR),
        Path(settings.REFINERY_DATASET_DIR),
    ]


def _resolved(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        return path.resolve(strict=False)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _links_stay_inside(folder: Path, root: Path) -> bool:
    """No entry of the model folder (at any depth) is a link that resolves outside `root`."""
    seen = 0
    for current, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            seen += 1
            if seen > MAX_ENTRIES:
                return False
            entry = Path(current) / name
            if entry.is_symlink():
                try:
                    target = entry.resolve(strict=True)
                except (OSError, RuntimeError):
                    return False
                if not _inside(target, root):
                    return False
    return True


def model_path_check(*, team_id: int, path: str) -> Path:
    """The resolved model folder if `path` is allowed for the team; ModelPathRefused otherwise."""
    refused = ModelPathRefused(team_id)
    raw = Path(path or "")
    if not path or not raw.is_absolute() or "\x00" in path:
        raise refused
    try:
        folder = raw.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a link loop, unreadable
        raise refused from None
    if any(_inside(folder, _resolved(area)) for area in _private_areas()):
        raise refused
    root = next((r for r in (_resolved(root) for root in model_roots(team_id)) if _inside(folder, r)), None)
    if root is None or folder == root:
        raise refused
    try:
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise refused
        if not _inside((folder / "config.json").resolve(strict=True), root) or not _links_stay_inside(folder, root):
            raise refused
    except OSError:
        raise refused from None
    return folder


def _overlaps(a: Path, b: Path) -> bool:
    return _inside(a, b) or _inside(b, a)


@checks.register(checks.Tags.security)
def model_roots_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Startup check: the model roots must be absolute and share nothing with work dirs, checkpoints, datasets."""
    errors: list[checks.CheckMessage] = []
    for template in _templates():
        fixed = Path(template.split(TEAM_PLACEHOLDER, 1)[0] or "/")
        if not Path(template).is_absolute():
            errors.append(
                checks.Error(f"REFINERY_MODEL_ROOTS: {template!r} is not an absolute folder", id="refinery.E101")
            )
            continue
        for area in _private_areas():
            if _overlaps(_resolved(fixed), _resolved(area)):
                errors.append(
                    checks.Error(
                        f"REFINERY_MODEL_ROOTS: {template!r} overlaps {area} (stage work dirs, checkpoints and datasets "
                        "must be outside every model root)",
                        id="refinery.E102",
                    )
                )
    return errors
