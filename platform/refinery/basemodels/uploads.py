"""Unpack an uploaded model archive (.zip, .tar, .tar.gz) into a team's model root, safely.

Only what a transformers model folder needs is accepted: config and tokenizer files (JSON, text,
sentencepiece models, chat templates) and *.safetensors weights. Pickle files (*.bin, *.pt, ...)
can run code when loaded and are refused, as is everything else: links, devices, absolute names,
"..", too many members or more than REFINERY_MAX_MODEL_UPLOAD_BYTES once extracted (counted while
the bytes are written, whatever the headers claim). The archive is extracted into a hidden temp
folder in the root and renamed into place in one step; on any failure nothing is left behind.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from django.conf import settings

CHUNK = 1024 * 1024
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".pkl.gz", ".joblib", ".npy", ".npz")
ALLOWED_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".md", ".tiktoken")
ALLOWED_NAMES = ("LICENSE", "NOTICE")
IGNORED = ("__MACOSX", ".DS_Store")  # what archivers on macOS add; skipped, never extracted
ARCHIVE_KINDS = {".zip": "zip", ".tar": "tar", ".tar.gz": "tar", ".tgz": "tar"}
UPLOAD_PREFIX = ".upload-"


class ModelArchiveError(Exception):
    """The archive cannot become a model folder; the message says why. `too_large` for the size limits."""

    def __init__(self, message: str, *, too_large: bool = False):
        self.too_large = too_large
        super().__init__(message)


def archive_kind(filename: str) -> str:
    lowered = (filename or "").lower()
    for suffix, kind in sorted(ARCHIVE_KINDS.items(), key=lambda item: -len(item[0])):
        if lowered.endswith(suffix):
            return kind
    raise ModelArchiveError(f"{filename!r} is not a model archive: upload a .zip, .tar or .tar.gz of the model folder")


def _member_path(name: str) -> tuple[str, ...] | None:
    """The member's path as parts; None for entries to skip; ModelArchiveError for unsafe names."""
    if "\x00" in name or "\\" in name:
        raise ModelArchiveError(f"archive member {name!r}: backslashes and NUL characters are not allowed in names")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ModelArchiveError(f"archive member {name!r}: absolute names are not allowed")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if any(part == ".." for part in parts):
        raise ModelArchiveError(f"archive member {name!r}: '..' (a path out of the folder) is not allowed")
    if not parts or parts[0] in IGNORED or parts[-1] in IGNORED or parts[-1].startswith("._"):
        return None
    return parts


def _file_allowed(filename: str) -> None:
    lowered = filename.lower()
    if lowered.endswith(PICKLE_SUFFIXES):
        raise ModelArchiveError(
            f"{filename}: pickle files (.bin, .pt, .pth, .pkl, .ckpt) can run code when loaded; "
            "convert the weights to .safetensors and upload those"
        )
    if filename in ALLOWED_NAMES or lowered.endswith(ALLOWED_SUFFIXES):
        return
    raise ModelArchiveError(
        f"{filename}: not a file a model folder holds; an archive may contain config and tokenizer files "
        "(.json, .txt, .model, .jinja) and .safetensors weights only"
    )


class _Budget:
    """Counts members and extracted bytes against the limits."""

    def __init__(self):
        self.max_bytes = int(settings.REFINERY_MAX_MODEL_UPLOAD_BYTES)
        self.max_members = int(settings.REFINERY_MAX_MODEL_UPLOAD_MEMBERS)
        self.bytes = 0
        self.members = 0

    def member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ModelArchiveError(f"the archive has more than {self.max_members} members", too_large=True)

    def add(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.max_bytes:
            raise ModelArchiveError(
                f"the archive holds more than {self.max_bytes} bytes once extracted (REFINERY_MAX_MODEL_UPLOAD_BYTES)",
                too_large=True,
            )


def _write(stream: IO[bytes], target: Path, budget: _Budget) -> None:
    with open(target, "xb") as out:  # "x": a duplicate member name fails instead of overwriting
        while block := stream.read(CHUNK):
            budget.add(len(block))
            out.write(block)


def _zip_members(fileobj: IO[bytes]) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    """(name, "file"|"dir", stream) for each member; refuses links, devices and encrypted members."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelArchiveError(f"not a readable .zip archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if info.flag_bits & 0x1:
                raise ModelArchiveError(f"archive member {info.filename!r}: encrypted members are not supported")
            if info.is_dir():
                yield info.filename, "dir", None
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # Unix type bits, when present: links, devices
                raise ModelArchiveError(f"archive member {info.filename!r}: links and special files are not allowed")
            else:
                with archive.open(info) as stream:
                    yield info.filename, "file", stream


def _tar_members(fileobj: IO[bytes]) -> Iterator[tuple[str, str, IO[bytes] | None]]:
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r|*")  # a stream: members are read in order, once
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelArchiveError(f"not a readable .tar or .tar.gz archive ({exc})") from None
    with archive:
        for member in archive:
            if member.isdir():
                yield member.name, "dir", None
            elif member.isreg():
                stream = archive.extractfile(member)
                assert stream is not None
                yield member.name, "file", stream
            else:
                what = "links" if member.issym() or member.islnk() else "devices, pipes and special files"
                raise ModelArchiveError(f"archive member {member.name!r}: {what} are not allowed")


def _extract(kind: str, fileobj: IO[bytes], into: Path) -> None:
    budget = _Budget()
    members = _zip_members(fileobj) if kind == "zip" else _tar_members(fileobj)
    try:
        for name, what, stream in members:
            budget.member()
            parts = _member_path(name)
            if parts is None:
                continue
            if what == "dir":
                if len(parts) > 1:
                    raise ModelArchiveError(f"archive member {name!r}: a model folder has no sub-folders")
                continue
            if len(parts) > 2:
                raise ModelArchiveError(f"archive member {name!r}: a model folder has no sub-folders")
            _file_allowed(parts[-1])
            target = into.joinpath(*parts)
            target.parent.mkdir(exist_ok=True)
            assert stream is not None
            try:
                _write(stream, target, budget)
            except FileExistsError:
                raise ModelArchiveError(f"archive member {name!r} appears twice") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError, ValueError) as exc:
        # zlib.error is a subclass of Exception only; it is caught below with a generic reading error.
        raise ModelArchiveError(f"the archive is damaged ({exc})") from None
    except ModelArchiveError:
        raise
    except Exception as exc:  # noqa: BLE001 - zlib/bz2/lzma errors from a corrupt stream
        raise ModelArchiveError(f"the archive is damaged ({type(exc).__name__}: {exc})") from None


def _flatten(into: Path) -> Path:
    """The model folder inside the extraction: the top level, or the one folder that holds everything."""
    entries = [entry for entry in into.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    if any(entry.is_dir() for entry in entries):
        raise ModelArchiveError(
            "the archive mixes files and folders at its top: archive one model folder, or its files"
        )
    return into


@contextmanager
def staged_upload(root: Path) -> Iterator[Path]:
    """A hidden temp folder in `root`, removed on the way out whatever happened."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_name(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:60] or "model"
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def model_archive_extract(*, fileobj: IO[bytes], filename: str, root: Path, name: str) -> Path:
    """Unpack the archive into `root`/<name>-<8 hex> and return that folder (config.json, weights, tokenizer).

    Raises ModelArchiveError and leaves nothing in `root` when the archive is not a safe model folder."""
    kind = archive_kind(filename)
    with staged_upload(root) as tmp:
        unpacked = tmp / "x"
        unpacked.mkdir()
        _extract(kind, fileobj, unpacked)
        folder = _flatten(unpacked)
        files = [entry.name for entry in folder.iterdir()]
        if "config.json" not in files:
            raise ModelArchiveError("the archive has no config.json: it must hold a transformers model folder")
        if not any(posixpath.splitext(f)[1] == ".safetensors" for f in files):
            raise ModelArchiveError("the archive has no .safetensors weights")
        final = root / folder_name(name)
        folder.rename(final)  # same filesystem: atomic; the folder appears complete or not at all
        return final
