"""Read a run's MLflow artifacts for the web side: list a folder with sizes, stream one file.

The browser never talks to MLflow: pages call these functions and Django passes the bytes on
(refinery.tracking.stage_artifacts checks the team and the path first). A download is streamed in chunks,
never held whole in memory:

- proxied artifacts (`mlflow-artifacts:/`, the platform's setup: `mlflow server` serves them over
  HTTP): one streamed GET to the tracking server, passed on chunk by chunk;
- a local artifact store (`file:` or a path, the embedded setup): the file is read in chunks;
- any other store (S3, GCS, ...): MLflow downloads the file to a temporary directory on this host,
  which is then read in chunks and removed when the response is closed.

Errors never carry MLflow's address: the tracking server's URL is private, and a requests/MLflow
exception message names it. ArtifactUnavailable says what happened in words; the detail is logged.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.core.cache import cache

from refinery.tracking.client import tracking_client

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
ARTIFACT_URI_CACHE_SECONDS = 24 * 3600  # a run's artifact location never changes


class ArtifactNotFound(Exception):
    """No such file in the run's artifacts (or it is a folder)."""


class ArtifactUnavailable(Exception):
    """The artifact store could not be read now (tracking server down, store error). Safe to show."""


@dataclass(frozen=True)
class ArtifactEntry:
    path: str  # from the run's artifact root, "/"-separated
    is_dir: bool
    size: int | None  # bytes; None for folders

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class ArtifactStream:
    """Chunks of one artifact file. Iterate once; `close()` releases the connection or file
    (Django's StreamingHttpResponse calls it when the response is done, read or not)."""

    def __init__(self, chunks: Iterator[bytes], close: Callable[[], None]):
        self._chunks = chunks
        self._close = close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()


def _unavailable(what: str, exc: Exception) -> ArtifactUnavailable:
    log.warning("artifact store: %s failed: %s: %s", what, type(exc).__name__, str(exc)[:500])
    return ArtifactUnavailable(f"the artifact store is not reachable right now ({what} failed); try again later")


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or status == 404


def artifact_entries(*, mlflow_run_id: str, path: str = "", client=None) -> list[ArtifactEntry]:
    """The files and folders directly under `path` (the root when empty): folders first, then files,
    each by name. Empty when the folder does not exist."""
    client = client or tracking_client()
    try:
        infos = client.list_artifacts(mlflow_run_id, path or None)
    except Exception as exc:  # noqa: BLE001 - any failure of the store reads the same to a user
        if _is_missing(exc):
            return []
        raise _unavailable("listing the artifacts", exc) from None
    entries = [
        ArtifactEntry(
            path=info.path,
            is_dir=bool(info.is_dir),
            size=None if info.is_dir or info.file_size is None else int(info.file_size),
        )
        for info in infos
    ]
    return sorted(entries, key=lambda e: (not e.is_dir, e.name.lower(), e.name))


def artifact_file(*, mlflow_run_id: str, path: str, client=None) -> ArtifactEntry:
    """The entry of one file (its size), from a listing of its folder; ArtifactNotFound for a folder or
    a path that is not there."""
    parent = posixpath.dirname(path)
    for entry in artifact_entries(mlflow_run_id=mlflow_run_id, path=parent, client=client):
        if entry.path == path:
            if entry.is_dir:
                raise ArtifactNotFound(f"{path} is a folder")
            return entry
    raise ArtifactNotFound(f"no artifact {path!r}")


def _repository(client, mlflow_run_id: str):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    key = f"refinery:artifact-uri:{mlflow_run_id}"
    uri = cache.get(key)
    if uri is None:
        uri = client.get_run(mlflow_run_id).info.artifact_uri
        cache.set(key, uri, ARTIFACT_URI_CACHE_SECONDS)
    return get_artifact_repository(uri, tracking_uri=client.tracking_uri)


def _file_chunks(fh, chunk_bytes: int) -> Iterator[bytes]:
    while chunk := fh.read(chunk_bytes):
        yield chunk


def artifact_open(*, mlflow_run_id: str, path: str, client=None, chunk_bytes: int = CHUNK_BYTES) -> ArtifactStream:
    """Open one artifact file for streaming. The request to the store is made here, so a missing file
    (ArtifactNotFound) or an unreachable store (ArtifactUnavailable) is known before any byte is sent."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    client = client or tracking_client()
    try:
        repo = _repository(client, mlflow_run_id)
    except Exception as exc:  # noqa: BLE001
        raise _unavailable("finding the run's artifacts", exc) from None

    if isinstance(repo, HttpArtifactRepository):
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        try:
            response = http_request(
                get_default_host_creds(repo.artifact_uri),
                "/" + quote(path, safe="/"),
                "GET",
                stream=True,
                raise_on_status=False,
            )
        except Exception as exc:  # noqa: BLE001
            raise _unavailable("opening the artifact", exc) from None
        if response.status_code == 404:
            response.close()
            raise ArtifactNotFound(f"no artifact {path!r}")
        if response.status_code != 200:
            response.close()
            raise _unavailable("opening the artifact", RuntimeError(f"HTTP {response.status_code}"))
        return ArtifactStream(response.iter_content(chunk_size=chunk_bytes), response.close)

    if isinstance(repo, LocalArtifactRepository):
        try:
            local = repo.get_local_path(path)  # refuses paths that leave the run's folder
        except Exception as exc:  # noqa: BLE001
            raise ArtifactNotFound(f"no artifact {path!r}") from exc
        if not Path(local).is_file():
            raise ArtifactNotFound(f"{path} is a folder")
        fh = open(local, "rb")  # noqa: SIM115 - closed by ArtifactStream.close
        return ArtifactStream(_file_chunks(fh, chunk_bytes), fh.close)

    tmp = tempfile.mkdtemp(prefix="refinery-artifact-")
    try:
        local = Path(client.download_artifacts(mlflow_run_id, path, tmp))
        if not local.is_file():
            raise ArtifactNotFound(f"{path} is a folder")
        fh = open(local, "rb")  # noqa: SIM115 - closed by ArtifactStream.close
    except ArtifactNotFound:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_missing(exc):
            raise ArtifactNotFound(f"no artifact {path!r}") from None
        raise _unavailable("downloading the artifact", exc) from None

    def close() -> None:
        fh.close()
        shutil.rmtree(tmp, ignore_errors=True)

    return ArtifactStream(_file_chunks(fh, chunk_bytes), close)


__all__ = [
    "ArtifactEntry",
    "ArtifactNotFound",
    "ArtifactStream",
    "ArtifactUnavailable",
    "artifact_entries",
    "artifact_file",
    "artifact_open",
]
