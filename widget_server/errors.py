"""One error hierarchy for the whole server.

Every error a client can see carries a stable ``code`` (documented in ``docs/protocol.md``) and,
when the connection must end, the WebSocket ``close_code`` to end it with.
"""

from __future__ import annotations

# WebSocket close codes used by the server (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
# Private range (4000-4999): the visitor stopped reading and its send buffer filled up.
CLOSE_SLOW_READER = 4008


class WidgetServerError(Exception):
    """Base class of every error raised by this package."""


class ConfigurationError(WidgetServerError):
    """The server cannot start as configured; the message says what to change."""


class ProtocolError(WidgetServerError):
    """A client message that the server refuses.

    ``code`` is the documented error code sent back in an ``error`` frame; ``close_code`` is set
    when the connection must be closed after the error is sent; ``message_id`` echoes the id of the
    offending message when it could be read.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        close_code: int | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.message_id = message_id

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, close_code={self.close_code})"


class StoreUnavailable(WidgetServerError):
    """Redis/Valkey could not record a state change; the client should retry the message."""
