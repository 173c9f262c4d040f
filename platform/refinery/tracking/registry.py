"""The MLflow Model Registry calls behind refinery.registry (its only caller on the web side).

Facts checked against the installed MLflow (3.17.2: the client and `mlflow server` with a SQL store):

- A stage output is a directory of Hugging Face files logged with `log_artifacts` (under "model" or
  "adapter"), not an MLflow model flavour: there is no MLmodel file. A version's `source` is the run-relative
  URI `runs:/<run_id>/<artifact_path>`, sent *with* `run_id` set to that same run: the server accepts a runs:/
  source only when `run_id` names the run in the URI (otherwise INVALID_PARAMETER_VALUE, "The run_id request
  parameter must identify the resource that contains the source"), stores the URI as given and marks the
  version READY at once (nothing is copied). `mlflow.artifacts.download_artifacts("models:/<name>@<alias>")`
  then fetches the directory's files, so a consumer gets the HF files by alias. The resolved URI
  (`mlflow-artifacts:/<experiment>/<run>/artifacts/<path>`) is accepted too, but ties the version to one
  artifact-store layout; runs:/ keeps working if the store moves.
- Registered model names may not contain "/" or ":"; creating an existing one raises RESOURCE_ALREADY_EXISTS.
  Names are unique server-wide, so Refinery's are prefixed: `<MLFLOW_EXPERIMENT_PREFIX>.team-<pk>.<name>`.
- Aliases: MLflow allows `[A-Za-z0-9_-]` (up to 255 characters) and reserves "latest" and `v<digits>`; an
  alias points at one version, and setting it again moves it; deleting an alias that is not set is not an
  error; `get_model_version_by_alias` on a missing alias raises INVALID_PARAMETER_VALUE.
- `search_model_versions` does not fill in the versions' aliases; `get_registered_model(name).aliases` is the
  {alias: version} map (version numbers as strings).

Every call raises RegistryBackendError (one line, safe to show: no server address) when MLflow refuses or
cannot be reached, so that callers never import mlflow to catch its exceptions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from django.conf import settings

from refinery.tracking.client import tracking_client

log = logging.getLogger(__name__)

MAX_TAG_VALUE = 5000


class RegistryBackendError(Exception):
    """MLflow refused a registry call or could not be reached; `code` is MLflow's error code, if any."""

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message)
        self.code = code


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException, RestException

    try:
        yield
    except RestException as exc:  # the server answered with an error
        first = (exc.message or str(exc)).splitlines()[0]
        first = re.sub(r"^[A-Z_]+: ", "", first)[:300]
        raise RegistryBackendError(f"MLflow refused to {what}: {first}", code=exc.error_code) from exc
    except MlflowException as exc:  # the client gave up: connection refused, timeouts, 5xx after retries
        log.warning("MLflow registry call failed (%s): %s", what, exc)
        raise RegistryBackendError(
            f"could not reach the tracking server (MLflow) to {what}; try again later", code=exc.error_code
        ) from exc
    except OSError as exc:  # requests' ConnectionError and friends, when MLflow does not wrap them
        log.warning("MLflow registry call failed (%s): %s", what, exc)
        raise RegistryBackendError(f"could not reach the tracking server (MLflow) to {what}; try again later") from exc


def model_name(*, team, name: str) -> str:
    """The registered model's name in MLflow: unique server-wide, never shown to users."""
    prefix = re.sub(r"[/:]+", ".", settings.MLFLOW_EXPERIMENT_PREFIX or "refinery").strip(".") or "refinery"
    return f"{prefix}.team-{team.pk}.{name}"


def _tags(tags: Mapping[str, object] | None) -> dict[str, str]:
    return {k: str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items() if v not in (None, "")}


def registered_model_ensure(
    *, mlflow_name: str, description: str = "", tags: Mapping[str, object] | None = None, client=None
) -> bool:
    """Create the registered model unless it exists (an earlier attempt may have made it). True if created."""
    client = client or tracking_client()
    with _mlflow_errors("create the registered model"):
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(mlflow_name, tags=_tags(tags), description=description or None)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return False
    return True


def model_version_create(
    *,
    mlflow_name: str,
    mlflow_run_id: str,
    artifact_path: str,
    description: str = "",
    tags: Mapping[str, object] | None = None,
    client=None,
) -> int:
    """Register `runs:/<mlflow_run_id>/<artifact_path>` as a new version; returns MLflow's version number."""
    client = client or tracking_client()
    with _mlflow_errors("register the model version"):
        version = client.create_model_version(
            mlflow_name,
            f"runs:/{mlflow_run_id}/{artifact_path}",
            run_id=mlflow_run_id,
            tags=_tags(tags),
            description=description or None,
            await_creation_for=0,  # a runs:/ source is READY at once
        )
    return int(version.version)


def model_version_delete(*, mlflow_name: str, version: int, client=None) -> None:
    client = client or tracking_client()
    with _mlflow_errors("delete the model version"):
        client.delete_model_version(mlflow_name, str(version))


def alias_set(*, mlflow_name: str, alias: str, version: int, client=None) -> None:
    """Point `alias` at `version` (moving it if it pointed elsewhere)."""
    client = client or tracking_client()
    with _mlflow_errors(f"set the alias {alias!r}"):
        client.set_registered_model_alias(mlflow_name, alias, str(version))


def alias_delete(*, mlflow_name: str, alias: str, client=None) -> None:
    """Remove `alias` (nothing happens if it is not set)."""
    client = client or tracking_client()
    with _mlflow_errors(f"remove the alias {alias!r}"):
        client.delete_registered_model_alias(mlflow_name, alias)


def alias_restore(*, mlflow_name: str, alias: str, version: int | None, client=None) -> None:
    """Put an alias back as it was: pointing at `version`, or not set when `version` is None."""
    if version is None:
        alias_delete(mlflow_name=mlflow_name, alias=alias, client=client)
    else:
        alias_set(mlflow_name=mlflow_name, alias=alias, version=version, client=client)


def aliases_get(*, mlflow_name: str, client=None) -> dict[str, int]:
    """The registered model's aliases as MLflow has them now: {alias: version}."""
    client = client or tracking_client()
    with _mlflow_errors("read the aliases"):
        model = client.get_registered_model(mlflow_name)
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def model_version_get(*, mlflow_name: str, version: int, client=None) -> dict:
    """One version as MLflow has it: {"version", "source", "run_id", "status", "tags"}."""
    client = client or tracking_client()
    with _mlflow_errors("read the model version"):
        found = client.get_model_version(mlflow_name, str(version))
    return {
        "version": int(found.version),
        "source": found.source,
        "run_id": found.run_id,
        "status": found.status,
        "tags": dict(found.tags or {}),
    }


__all__ = [
    "RegistryBackendError",
    "model_name",
    "registered_model_ensure",
    "model_version_create",
    "model_version_delete",
    "alias_set",
    "alias_delete",
    "alias_restore",
    "aliases_get",
    "model_version_get",
]


def model_version_tags_set(*, mlflow_name: str, version: int, tags: Mapping[str, object], client=None) -> None:
    """Add tags to a version (a gate's decision on the version it registered)."""
    client = client or tracking_client()
    with _mlflow_errors("tag the model version"):
        for key, value in _tags(tags).items():
            client.set_model_version_tag(mlflow_name, str(version), key, value)
