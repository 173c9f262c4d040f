"""Which webhook URLs may be called (SSRF guard): http or https only, no credentials in the URL, and a host
that resolves only to public addresses. Loopback, private, link-local, multicast, reserved and unspecified
addresses are refused unless the operator sets REFINERY_WEBHOOK_ALLOW_PRIVATE. The check runs when an
endpoint is created and again just before every delivery (a name may resolve differently later);
redirects are never followed."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class WebhookUrlError(Exception):
    """A refused webhook URL; the message says why."""


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def webhook_url_check(url: str) -> str:
    """The URL, stripped, if it may be called; WebhookUrlError otherwise."""
    url = (url or "").strip()
    if not url:
        raise WebhookUrlError("enter the URL to POST to (http:// or https://)")
    if len(url) > 2000:
        raise WebhookUrlError("the URL is longer than 2000 characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookUrlError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlError("a webhook URL must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise WebhookUrlError("the URL has no host")
    if parts.username or parts.password:
        raise WebhookUrlError("put no user name or password in the URL (the signature authenticates)")
    if any(c.isspace() or c == "\x00" for c in url):
        raise WebhookUrlError("the URL contains spaces or control characters")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise WebhookUrlError(f"the host {host!r} does not resolve") from None
    addresses = {info[4][0].split("%")[0] for info in infos}
    if not settings.REFINERY_WEBHOOK_ALLOW_PRIVATE:
        for address in sorted(addresses):
            if _refused(ipaddress.ip_address(address)):
                raise WebhookUrlError(
                    f"the host {host!r} resolves to {address}, a loopback, private or link-local address; "
                    "webhooks go to public addresses only (an operator can allow private ones with "
                    "REFINERY_WEBHOOK_ALLOW_PRIVATE)"
                )
    return url
