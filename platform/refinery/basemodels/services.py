"""Register base models. Local directories are inspected without importing torch.

A local model must live in one of the team's model roots (refinery.basemodels.paths); a model
archive uploaded by the team is unpacked into its own root (refinery.basemodels.uploads)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from django.db import transaction

from refinery.basemodels.models import BaseModel
from refinery.basemodels.paths import ModelPathRefused, model_path_check
from refinery.teams.services import audit

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit
COMMIT_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")
REVISION_MAX = 100
# git check-ref-format: no control characters, space, ~ ^ : ? * [ or backslash anywhere.
_REF_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def revision_error(revision: str) -> str | None:
    """Why `revision` is not a commit hash, tag or branch name (git check-ref-format rules); None if it is."""
    if COMMIT_RE.match(revision):
        return None
    problem = None
    if len(revision) > REVISION_MAX:
        problem = f"at most {REVISION_MAX} characters"
    elif _REF_BAD_CHARS.search(revision):
        problem = "no spaces, control characters or any of ~ ^ : ? * [ \\"
    elif revision.startswith(("-", "/", ".")) or revision.endswith(("/", ".", ".lock")):
        problem = "it cannot start with - / or . nor end with / . or .lock"
    elif ".." in revision or "//" in revision or "@{" in revision or revision == "@":
        problem = "no '..', '//' or '@{'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in revision.split("/")):
        problem = "no path component may start with . or end with .lock"
    if problem is None:
        return None
    return f"revision: {revision[:REVISION_MAX]!r} is not a commit hash, tag or branch name ({problem})"


class BaseModelError(Exception):
    too_large = False  # an upload over the size or member limits (the API answers 413)

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


def _safetensors_headers(folder: Path):
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > SAFETENSORS_MAX_HEADER:
                raise ValueError(f"{file.name}: a safetensors header of {length} bytes")
            yield json.loads(fh.read(length))


def local_model_layout(model: BaseModel) -> tuple[list[str], int | None] | None:
    """(tensor names, transformer layer count) of a local model, from file headers only; None if unknown."""
    if model.source != BaseModel.Source.LOCAL:
        return None
    try:
        folder = model_path_check(team_id=model.team_id, path=model.name_or_path)
        names = [name for header in _safetensors_headers(folder) for name in header if name != "__metadata__"]
        config = json.loads((folder / "config.json").read_text())
    except (ModelPathRefused, OSError, ValueError, struct.error):
        return None
    if not names:
        return None
    layers = config.get("num_hidden_layers")
    return names, layers if isinstance(layers, int) else None


def _safetensors_parameter_count(folder: Path) -> int | None:
    """Count parameters from safetensors headers (8-byte length + JSON), reading no weights."""
    total = 0
    found = False
    for header in _safetensors_headers(folder):
        found = True
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info.get("shape", []):
                count *= dim
            total += count
    if not found:
        return None
    return total


def inspect_local_model(path: str, *, team_id: int) -> dict:
    """Read architecture, size and chat template of a local model folder in the team's model roots.

    Every path that is not such a folder (missing, outside the roots, a link out of them, no config.json)
    gets the same error, so that the answer tells nothing about other paths on the server."""
    try:
        folder = model_path_check(team_id=team_id, path=path)
    except ModelPathRefused as exc:
        raise BaseModelError({"name_or_path": f"name_or_path: {exc}"}) from None
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise BaseModelError(
            {"name_or_path": f"name_or_path: the model's config.json is not valid JSON ({exc})"}
        ) from None
    try:
        parameter_count = _safetensors_parameter_count(folder)
    except (OSError, ValueError, struct.error, TypeError, AttributeError):
        raise BaseModelError(
            {"name_or_path": "name_or_path: a .safetensors file of the model has no valid header"}
        ) from None
    chat_template = ""
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        try:
            chat_template = json.loads(tok_config.read_text()).get("chat_template") or ""
        except (OSError, json.JSONDecodeError):
            chat_template = ""
    if not chat_template and (folder / "chat_template.jinja").is_file():
        chat_template = (folder / "chat_template.jinja").read_text()
    if isinstance(chat_template, list):  # named templates: take the default one
        chat_template = next((t.get("template", "") for t in chat_template if t.get("name") == "default"), "")
    return {
        "architecture": ",".join(config.get("architectures") or [config.get("model_type", "")]),
        "parameter_count": parameter_count,
        "chat_template": chat_template,
    }


@transaction.atomic
def base_model_create(
    *, team, user, name: str, source: str, name_or_path: str, revision: str = "", description: str = ""
) -> BaseModel:
    errors: dict[str, str] = {}
    name = (name or "").strip()
    name_or_path = (name_or_path or "").strip()
    revision = (revision or "").strip()
    if not name:
        errors["name"] = "name: give the model a name"
    elif BaseModel.objects.filter(team=team, name=name).exists():
        errors["name"] = f"name: this team already has a model called {name!r}"
    details: dict = {}
    if source == BaseModel.Source.LOCAL:
        if revision:
            errors["revision"] = "revision: only hub models have a revision"
        try:
            details = inspect_local_model(name_or_path, team_id=team.pk)
        except BaseModelError as exc:
            errors.update(exc.errors)
    elif source == BaseModel.Source.HUB:
        if not HUB_ID_RE.match(name_or_path):
            errors["name_or_path"] = f"name_or_path: {name_or_path!r} is not a hub id like 'org/model-name'"
        if revision and (problem := revision_error(revision)):
            errors["revision"] = problem
    else:
        errors["source"] = f"source: must be 'hub' or 'local', got {source!r}"
    if errors:
        raise BaseModelError(errors)
    model = BaseModel.objects.create(
        team=team,
        name=name,
        source=source,
        name_or_path=name_or_path,
        revision=revision,
        description=description,
        created_by=user,
        **details,
    )
    audit(team=team, user=user, action="base_model.created", target=name, source=source, ref=model.reference)
    return model


def base_model_upload(*, team, user, name: str, filename: str, fileobj, description: str = "") -> BaseModel:
    """Unpack an uploaded model archive into the team's own model root and register it as a local model.

    The archive is checked while it is extracted (refinery.basemodels.uploads); any problem raises
    BaseModelError (`too_large` set for the size limits) and leaves no folder and no row behind."""
    import shutil

    from refinery.basemodels.paths import team_upload_root
    from refinery.basemodels.uploads import ModelArchiveError, model_archive_extract

    name = (name or "").strip()
    if not name:
        raise BaseModelError({"name": "name: give the model a name"})
    if BaseModel.objects.filter(team=team, name=name).exists():
        raise BaseModelError({"name": f"name: this team already has a model called {name!r}"})
    root = team_upload_root(team.pk)
    if root is None:
        raise BaseModelError(
            {
                "file": "file: uploads are off here: no model root of this team's own is configured "
                "(REFINERY_MODEL_ROOTS has no {team} folder)"
            }
        )
    try:
        folder = model_archive_extract(fileobj=fileobj, filename=filename or "", root=root, name=name)
    except ModelArchiveError as exc:
        error = BaseModelError({"file": f"file: {exc}"})
        error.too_large = exc.too_large
        raise error from None
    try:
        return base_model_create(
            team=team,
            user=user,
            name=name,
            source=BaseModel.Source.LOCAL,
            name_or_path=str(folder),
            description=description,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
