"""Refuse input the database cannot store before (or instead of) a 500.

PostgreSQL stores no NUL character in text or jsonb: a NUL that reaches a query fails there. Django's form
fields refuse it already (ProhibitNullCharactersValidator), but many views read `request.GET`/`request.POST`
directly (filters, notes, tags, the pipeline editor). So query strings and url-encoded form posts (what
browsers and htmx send) with a NUL get 400 naming the field, before any view. Multipart bodies are not read
here (that would parse uploads before their views choose upload handlers): a value the database refuses
there (a NUL, a number out of range) still ends as 400, through `process_exception`, and is logged.
/api/ validates its own input (422 naming the field) and is left alone, so that the fuzzer still sees any
5xx there (tests/security/test_api_fuzz.py).
"""

from __future__ import annotations

import logging

from django.db import DataError
from django.http import HttpResponseBadRequest

logger = logging.getLogger(__name__)


def nul_field(query) -> str | None:
    """The first field of a QueryDict whose name or a value holds a NUL character, or None."""
    for key, values in query.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            return key.replace("\x00", "\\u0000")
    return None


def _bad_request(text: str) -> HttpResponseBadRequest:
    return HttpResponseBadRequest(f"Bad request: {text}", content_type="text/plain; charset=utf-8")


class RejectUnstorableInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/api/"):
            field = nul_field(request.GET)
            form = request.method == "POST" and request.content_type == "application/x-www-form-urlencoded"
            if field is None and form:
                field = nul_field(request.POST)
            if field is not None:
                return _bad_request(f"{field!r} contains a NUL character (\\u0000).")
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DataError) and not request.path.startswith("/api/"):
            logger.warning(
                "refused a value the database cannot store: %s %s", request.method, request.path, exc_info=exception
            )
            return _bad_request("a value in this request cannot be stored (a NUL character, or a number out of range).")
        return None
