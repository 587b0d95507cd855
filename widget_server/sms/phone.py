"""Phone numbers as the SMS channel stores them: E.164 (``+`` and 8-15 digits)."""

from __future__ import annotations

import hashlib
import re

from ..errors import WidgetServerError

_SEPARATORS = re.compile(r"[\s().\-/\u00a0]")
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")


class PhoneNumberError(WidgetServerError):
    """A phone number that cannot be used; the message says why, for the visitor."""


def normalize_phone(raw: str) -> str:
    """``raw`` in E.164: spaces, dots, dashes, slashes and brackets dropped, a leading ``00``
    read as ``+``. The country code is required (``+49 170 1234567``, ``0049 170 1234567``).
    Raises PhoneNumberError with a message fit for the visitor."""
    if len(raw) > 40:
        raise PhoneNumberError("the phone number is too long")
    text = _SEPARATORS.sub("", raw.strip())
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text:
        raise PhoneNumberError("the phone number is empty")
    if not text.startswith("+"):
        raise PhoneNumberError("the phone number needs its country code, like +49 170 1234567")
    if not _E164.match(text):
        raise PhoneNumberError("that is not a phone number: + and 8 to 15 digits")
    return text


def phone_digest(phone: str) -> str:
    """A stable digest of an E.164 number for key names (numbers never appear in keys)."""
    return hashlib.sha256(phone.encode()).hexdigest()[:32]
