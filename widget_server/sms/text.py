"""The words of an SMS step: placeholders, and how long the text may be."""

from __future__ import annotations

import re

from .segments import MAX_SEGMENTS, measure

PLACEHOLDERS = ("{shop}", "{link}")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
# What the placeholders are measured as when a text is checked: a long shop name, and a short
# link as the server makes them (https, a host, /v1/sms/l/ and a 22-character token).
SAMPLE_SHOP = "S" * 30
SAMPLE_LINK = "https://" + "h" * 30 + "/v1/sms/l/" + "t" * 22


def sample(text: str) -> str:
    """``text`` with its placeholders filled as long as they get in practice."""
    return text.replace("{shop}", SAMPLE_SHOP).replace("{link}", SAMPLE_LINK)


def sms_text_problem(text: str) -> str:
    """What is wrong with an SMS text, or ""."""
    if not text.strip():
        return "the SMS text is empty"
    if len(text) > 1600:
        return "the SMS text is at most 1600 characters"
    unknown = [p for p in _PLACEHOLDER.findall(text) if p not in PLACEHOLDERS]
    if unknown:
        return f"{unknown[0]} is not a placeholder of SMS texts (only {{shop}} and {{link}})"
    size = measure(sample(text))
    if size.segments > MAX_SEGMENTS:
        return (
            f"the SMS text takes {size.segments} segments ({size.encoding}) with its link and "
            f"shop name; at most {MAX_SEGMENTS}"
        )
    return ""


def sms_size(text: str) -> str:
    """An SMS text's encoding and segments with its placeholders filled as long as they get, as
    editors show it: ``GSM-7 · 1 segment · 62 of 160``."""
    size = measure(sample(text))
    segments = "1 segment" if size.segments == 1 else f"{size.segments} segments"
    return f"{size.encoding} · {segments} · {size.units} of {size.per_segment * size.segments}"
