"""Links that marketers and feeds give the product: an absolute http(s) URL, or a path on the
shop's own site. Pure.

A path must start with exactly one ``/`` and hold no backslash: browsers read a backslash in an
http(s) URL as a slash, so ``/\\evil.example/x`` (like ``//evil.example/x``) would leave the shop.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_LENGTH = 2048
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")  # control characters, spaces, backslashes


def safe_link(value: str) -> str | None:
    """``value`` if it is an absolute http(s) URL with a host or a path on the shop's own site,
    else ``None``."""
    if not value or len(value) > MAX_LENGTH or _UNSAFE.search(value):
        return None
    if value.startswith("/"):
        return value if not value.startswith("//") else None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.hostname else None
