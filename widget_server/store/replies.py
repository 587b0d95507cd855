"""Reading Redis replies. Pure: clients return bytes unless told to decode, scripts return numbers
and strings, and the code reading them wants text."""

from __future__ import annotations


def reply_text(value: object) -> str:
    """A reply value as text: bytes as UTF-8 (bytes that are not UTF-8 replaced, never an error),
    anything else through ``str``."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
