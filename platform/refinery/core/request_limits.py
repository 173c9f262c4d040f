"""Request bodies over the limits get 413, before or while they stream in; never a 500.

Two pieces, both in settings:

- `RequestSizeLimitMiddleware` (right after SecurityMiddleware) refuses a body whose
  Content-Length is over the limit before anything reads it: a multipart upload may
  carry REFINERY_MAX_UPLOAD_BYTES of files plus DATA_UPLOAD_MAX_MEMORY_SIZE of other
  fields; any other body at most DATA_UPLOAD_MAX_MEMORY_SIZE. It then parses a multipart
  POST itself, so that an upload refused while streaming is answered here, before CSRF
  or a view reads the form.
- `UploadLimitHandler` (first in FILE_UPLOAD_HANDLERS) counts the file bytes as they
  arrive and stops the upload once they pass REFINERY_MAX_UPLOAD_BYTES: the handlers
  after it (memory, then a temporary file) never receive more than the limit, and
  Django closes (deletes) what they had.

API paths (/api/) answer the API's JSON error shape `{"detail": ...}`; the upload
page's XHR gets JSON it shows in place; a browser gets a plain 413 page.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.template.loader import render_to_string
from django.utils.datastructures import MultiValueDict

from refinery.core.units import format_bytes

REFUSED_ATTR = "refinery_body_refused"  # set on the request, with the message, when a body is refused
BODY_METHODS = ("POST", "PUT", "PATCH")


def upload_too_large_message(limit: int) -> str:
    return f"the upload is larger than the limit of {format_bytes(limit)} ({limit:,} bytes); nothing was stored"


def body_too_large_message(limit: int) -> str:
    return f"the request body is larger than the limit of {format_bytes(limit)} ({limit:,} bytes)"


def _content_length(request: HttpRequest) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


# Model archives (basemodels upload page and API) may be far larger than datasets: they get
# REFINERY_MAX_MODEL_UPLOAD_BYTES instead, counted again (extracted) by refinery.basemodels.uploads.
MODEL_UPLOAD_PATHS = ("/models/upload/", "/api/v1/base-models/upload")


def upload_limit(request: HttpRequest | None) -> int:
    """The most file bytes this request may upload."""
    if request is not None and request.path_info in MODEL_UPLOAD_PATHS:
        return max(settings.REFINERY_MAX_UPLOAD_BYTES, settings.REFINERY_MAX_MODEL_UPLOAD_BYTES)
    return settings.REFINERY_MAX_UPLOAD_BYTES


def _is_multipart(request: HttpRequest) -> bool:
    return request.content_type == "multipart/form-data"


def _refusal_by_length(request: HttpRequest) -> str | None:
    """A message when the declared body is over its limit, else None. Reads nothing."""
    length = _content_length(request)
    fields_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if _is_multipart(request):
        limit = upload_limit(request)
        if length > limit + (fields_limit or 0):
            return upload_too_large_message(limit)
        return None
    if fields_limit is not None and length > fields_limit:
        return body_too_large_message(fields_limit)
    return None


class UploadLimitHandler(FileUploadHandler):
    """Stops an upload whose files pass REFINERY_MAX_UPLOAD_BYTES, while it streams in."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.limit = upload_limit(self.request)
        self.received = 0
        if content_length > self.limit + (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0):
            # Declared too large: take over the parsing and read nothing at all.
            self._refuse()
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self._refuse()
            raise StopUpload(connection_reset=False)  # Django closes the partial files and drains the rest
        return raw_data

    def file_complete(self, file_size):
        return None  # the handlers after this one store the file

    def _refuse(self) -> None:
        if self.request is not None:
            setattr(self.request, REFUSED_ATTR, upload_too_large_message(self.limit))


def too_large_response(request: HttpRequest, message: str) -> HttpResponse:
    """413 in the shape the client reads: JSON for the API and the upload page's XHR, else a page."""
    if request.path_info.startswith("/api/"):
        return JsonResponse({"detail": message}, status=413)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return JsonResponse({"detail": message, "error": message}, status=413)
    html = render_to_string("413.html", {"message": message})
    return HttpResponse(html, status=413)


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in BODY_METHODS:
            refusal = _refusal_by_length(request)
            if refusal is not None:
                return too_large_response(request, refusal)
            if request.method == "POST" and _is_multipart(request):
                request.POST  # noqa: B018 - parse now, through UploadLimitHandler
                if refusal := getattr(request, REFUSED_ATTR, None):
                    return too_large_response(request, refusal)
        response = self.get_response(request)
        if refusal := getattr(request, REFUSED_ATTR, None):  # a body parsed later (multipart PUT)
            return too_large_response(request, refusal)
        return response
