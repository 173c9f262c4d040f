"""Register base models. Local directories are inspected without importing torch."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from django.db import transaction

from refinery.basemodels.models import BaseModel
from refinery.teams.services import audit

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
REVISION_RE = re.compile(r"^[\w./-]{1,100}$")


class BaseModelError(Exception):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


def _safetensors_headers(folder: Path):
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            yield json.loads(fh.read(length))


def local_model_layout(model: BaseModel) -> tuple[list[str], int | None] | None:
    """(tensor names, transformer layer count) of a local model, from file headers only; None if unknown."""
    if model.source != BaseModel.Source.LOCAL:
        return None
    folder = Path(model.name_or_path)
    try:
        names = [name for header in _safetensors_headers(folder) for name in header if name != "__metadata__"]
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, struct.error):
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


def inspect_local_model(path: str) -> dict:
    """Read architecture, size and chat template of a local model folder, or explain what is missing."""
    folder = Path(path)
    if not folder.is_absolute():
        raise BaseModelError({"name_or_path": f"name_or_path: a local path must be absolute, got {path!r}"})
    if not folder.is_dir():
        raise BaseModelError({"name_or_path": f"name_or_path: {path} is not a directory on this server"})
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BaseModelError({"name_or_path": f"name_or_path: {path} has no config.json (not a transformers model folder)"})
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseModelError({"name_or_path": f"name_or_path: {config_file} is not valid JSON ({exc})"}) from None
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
        "parameter_count": _safetensors_parameter_count(folder),
        "chat_template": chat_template,
    }


@transaction.atomic
def base_model_create(*, team, user, name: str, source: str, name_or_path: str, revision: str = "",
                      description: str = "") -> BaseModel:
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
            details = inspect_local_model(name_or_path)
        except BaseModelError as exc:
            errors.update(exc.errors)
    elif source == BaseModel.Source.HUB:
        if not HUB_ID_RE.match(name_or_path):
            errors["name_or_path"] = f"name_or_path: {name_or_path!r} is not a hub id like 'org/model-name'"
        if revision and not REVISION_RE.match(revision):
            errors["revision"] = f"revision: {revision!r} is not a branch, tag or commit hash"
    else:
        errors["source"] = f"source: must be 'hub' or 'local', got {source!r}"
    if errors:
        raise BaseModelError(errors)
    model = BaseModel.objects.create(
        team=team, name=name, source=source, name_or_path=name_or_path, revision=revision,
        description=description, created_by=user, **details,
    )
    audit(team=team, user=user, action="base_model.created", target=name, source=source, ref=model.reference)
    return model
