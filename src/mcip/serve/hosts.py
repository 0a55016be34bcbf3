"""Which ``Host`` headers the server answers (a defence against DNS rebinding).

A web page on ``evil.example`` can make its own name resolve to 127.0.0.1 and then read a server on
localhost as if it were same-origin; the browser still sends ``Host: evil.example``. Refusing every
Host the server was not meant to be reached by closes that hole.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")


def default_allowed_hosts(bind_host: str, extra: Sequence[str] = ()) -> list[str] | None:
    """The Host names a server bound to ``bind_host`` answers by default (None: any).

    Loopback names always; the bound address itself; ``extra`` (``--allowed-host``). A server bound to
    every interface (0.0.0.0, ::) cannot know the names it is reached by, so it answers any Host unless
    ``extra`` names them; ``"*"`` in ``extra`` also means any.
    """
    extra = [normalise(h) for h in extra]
    if "*" in extra or (bind_host in WILDCARD_BINDS and not extra):
        return None
    names = [*LOOPBACK_NAMES, *extra]
    if bind_host not in WILDCARD_BINDS:
        names.append(normalise(bind_host))
    return list(dict.fromkeys(names))


def normalise(host: str) -> str:
    """Lower case, no brackets around IPv6, no trailing dot (``LOCALHOST.`` -> ``localhost``)."""
    return host.strip().strip("[]").rstrip(".").lower()


def host_of(header: str) -> str | None:
    """The host part of a ``Host`` header (port dropped), normalised; None when malformed."""
    header = header.strip()
    if header.startswith("["):  # [::1]:8000
        end = header.find("]")
        port = header[end + 1 :] if end > 0 else "?"
        if port and not (port.startswith(":") and port[1:].isdigit()):
            return None
        return normalise(header[1:end])
    if header.count(":") > 1:  # an IPv6 address must be in brackets (RFC 3986)
        return None
    name, colon, port = header.partition(":")
    if not name or (colon and not port.isdigit()):
        return None
    return normalise(name)


class HostCheck:
    """ASGI middleware: a request whose ``Host`` is not in ``allowed_hosts`` gets 400 with a JSON
    ``detail`` saying how to allow it (``mcip serve --allowed-host NAME``)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        if not allowed_hosts:
            raise ValueError("allowed_hosts is empty; pass None to answer any Host.")
        self.app = app
        self.allowed = frozenset(normalise(h) for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        host = host_of(header) if header is not None else None
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = "no Host header" if header is None else f"the Host {header[:100]!r}"
        detail = (
            f"This server does not answer to {shown}; it answers to {', '.join(sorted(self.allowed))}. "
            "Use one of those names, or start it with --allowed-host NAME."
        )
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
