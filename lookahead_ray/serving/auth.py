"""Who may call the API: the bearer key, compared as bytes, and the refusal to serve an open API
beyond loopback."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Sequence


def bearer_token(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The raw bytes of `Authorization: Bearer <token>`: compared as bytes, so any UTF-8 key matches
    (Starlette decodes headers as latin-1)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


def http_host() -> str:
    """The host Serve's HTTP proxies listen on; Serve's default when Serve is not running yet."""
    import ray  # heavy: Ray only when the host is asked
    from ray.serve.config import HTTPOptions  # heavy: as ray above

    if ray.is_initialized():
        from ray.serve.context import _get_global_client  # heavy: as ray above

        client = _get_global_client(raise_if_no_controller_running=False)
        if client is not None:
            return client.http_config.host or ""
    return HTTPOptions().host or ""


def is_loopback(host: str) -> bool:
    """
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Refuse an open API on the network: no key, a host beyond loopback, and no explicit opt-out."""
    if api_key or allow_unauthenticated or is_loopback(host):
        return
    raise ValueError(f"the HTTP proxies listen on {host!r} (beyond loopback) and no API key is set: set "
                     f"$LOOKAHEAD_API_KEY or args.api_key, or args.allow_unauthenticated: true if something in "
                     f"front of the app authenticates (deployments/README.md)")


def key_matches(key: str | None, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True when no key is set, or the request's bearer token is the key (constant-time compare).

    >>> key_matches("clé", [(b"authorization", "Bearer clé".encode())]), key_matches("k", [])
    (True, False)
    """
    if not key:
        return True
    token = bearer_token(headers)
    return token is not None and hmac.compare_digest(token, key.encode("utf-8"))
