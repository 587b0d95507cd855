"""How an SMS text is encoded and into how many segments it is split.

A text of only GSM 03.38 characters goes as GSM-7: 160 septets in one message, 153 per part of a
concatenated one (the rest of each part is the concatenation header). The characters of the
extension table (``^{}\\[~]|€`` and form feed) take two septets each, and a part never splits
such a pair. Any other character makes the whole text UCS-2: 70 UTF-16 code units in one
message, 67 per part (an emoji, outside the basic plane, takes two; a part never splits a
surrogate pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
MAX_SEGMENTS = 10


@dataclass(frozen=True, slots=True)
class SmsSize:
    """``encoding``; ``units``: septets (GSM-7) or UTF-16 code units (UCS-2); ``segments``;
    ``characters``: the text's length in characters."""

    encoding: Encoding
    units: int
    segments: int
    characters: int

    @property
    def per_segment(self) -> int:
        if self.encoding == "GSM-7":
            return GSM_SINGLE if self.segments <= 1 else GSM_PART
        return UCS2_SINGLE if self.segments <= 1 else UCS2_PART


def is_gsm(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 basic or extension table."""
    return all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text)


def _split(widths: list[int], single: int, part: int) -> int:
    """Segments for characters of ``widths`` units: one when they all fit ``single``, else
    parts of ``part`` units that never split a character."""
    total = sum(widths)
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in widths:
        if used + width > part:
            segments, used = segments + 1, 0
        used += width
    return segments


def measure(text: str) -> SmsSize:
    """The encoding, size and segment count of ``text`` (an empty text is one segment)."""
    if is_gsm(text):
        widths = [2 if ch in GSM_EXTENSION else 1 for ch in text]
        return SmsSize("GSM-7", sum(widths), _split(widths, GSM_SINGLE, GSM_PART), len(text))
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SmsSize("UCS-2", sum(widths), _split(widths, UCS2_SINGLE, UCS2_PART), len(text))
