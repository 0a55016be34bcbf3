"""uvicorn's h11 protocol with a deadline for the request headers.

uvicorn closes a keep-alive connection that stays silent, but not one that trickles a byte at a time (any
data cancels its keep-alive timer) nor one that connects and then sends an incomplete request: a few
hundred such connections would hold the server's sockets forever (slowloris). Here every connection must
complete its request line and headers within ``header_timeout_s`` of connecting, or of the end of its
previous response, or it is closed.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request headers are not complete within
    ``header_timeout_s`` seconds; build a subclass with the value through :func:`with_header_timeout`."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in: its body may take longer
            self._cancel_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timeout(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug(
                "Closing a connection whose request headers took over %g s", self.header_timeout_s
            )
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """A :class:`HeaderDeadlineProtocol` subclass with ``header_timeout_s = seconds`` (for
    ``uvicorn.Config(http=...)``, which takes a class)."""
    if not seconds > 0:
        raise ValueError(f"header_timeout_s must be positive, got {seconds}.")
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": float(seconds)})
