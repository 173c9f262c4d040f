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


def client_ip(request) -> str | None:
    """The client's address for sign-in throttling (AXES_CLIENT_IP_CALLABLE).

    With REFINERY_TRUSTED_PROXY_COUNT = N > 0 (N reverse proxies in front of the web, each
    appending to X-Forwarded-For), the N-th address from the right of X-Forwarded-For: the one
    the outermost proxy saw, which a client cannot forge. Otherwise (and when the header has
    fewer entries) REMOTE_ADDR, the direct peer.
    """
    from django.conf import settings

    count = settings.REFINERY_TRUSTED_PROXY_COUNT
    if count > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= count:
            return forwarded[-count]
    return request.META.get("REMOTE_ADDR")
