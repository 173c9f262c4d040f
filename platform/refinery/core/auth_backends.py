"""Authentication backends."""
from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class AxesRequestOptionalBackend(AxesStandaloneBackend):
    """django-axes for the test settings: Django's test client `login()` authenticates without
    a request, which axes refuses outright; such a call is left to the next backend. Every
    sign-in over HTTP carries its request and is throttled exactly as with the stock backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
