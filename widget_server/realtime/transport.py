"""The visitor sockets' transport: uvicorn's websockets-sansio protocol with a bound on what a
visitor who stops reading can hold.

Without the bound, a socket whose reader has stalled (a frozen tab, a phone in a lift) makes every
send to it wait until the network drains, so whatever sends to many visitors at once — a live
offer — waits with it, and the data for the stalled socket piles up in the kernel (megabytes per
socket when the buffer autotunes). Here each socket's send buffer is bounded
(``WIDGET_SEND_BUFFER_BYTES``, kernel and server side), and a send that finds it full is not
awaited: the socket is closed with :data:`~widget_server.errors.CLOSE_SLOW_READER` and the sender
moves on. A visitor who comes back reconnects and resumes their session like after any drop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from ..errors import CLOSE_SLOW_READER

if TYPE_CHECKING:
    from asyncio import BaseTransport

log = logging.getLogger("widget_server.realtime")
# Where the application's lifespan leaves the limit for the protocol (uvicorn hands each
# connection the lifespan state).
SEND_BUFFER_STATE = "widget_server.send_buffer_bytes"
DEFAULT_SEND_BUFFER_BYTES = 64 * 1024
# A socket closed for reading too slowly gets this long to take its close frame, then it is cut.
SLOW_READER_LINGER_S = 5.0


class VisitorWebSocketProtocol(WebSocketsSansIOProtocol):
    """A visitor socket whose sends never wait for a reader that has stopped reading."""

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        limit = int(self.app_state.get(SEND_BUFFER_STATE, DEFAULT_SEND_BUFFER_BYTES))
        self.transport.set_write_buffer_limits(high=limit, low=limit // 4)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # the kernel's part of the same budget
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limit)

    async def send(self, message: Any) -> None:
        full = not self.writable.is_set()
        if full and self.handshake_complete and not self.close_sent and not self.disconnected:
            if message["type"] == "websocket.close":
                self._close_now(int(message.get("code", 1000)), message.get("reason") or "")
                return
            log.warning("closing a socket that stopped reading", extra={"client": self.client})
            self._close_now(CLOSE_SLOW_READER, "slow reader")
            raise ClientDisconnected()
        await super().send(message)

    def _close_now(self, code: int, reason: str) -> None:
        """Queue a close frame behind what the socket already holds and stop: the application
        hears the close (with ``code``) at once; the transport is cut if the frame is not taken
        within :data:`SLOW_READER_LINGER_S`."""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        with contextlib.suppress(InvalidState):
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
        self.loop.call_later(SLOW_READER_LINGER_S, self.transport.abort)
