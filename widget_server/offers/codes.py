"""Discount codes: generated from a format, or read from a pool exported by the shop. Pure."""

from __future__ import annotations

import csv
import io
import re
import secrets

from ..errors import WidgetServerError

# No 0/O, 1/I/L: codes are read off a screen and typed at checkout.
_LETTERS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_DIGITS = "23456789"
_PLACEHOLDER = re.compile(r"\{([X9]+)\}")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
_CODE_COLUMNS = ("code", "discount code", "coupon code", "coupon_code", "post_title", "name")


class CodePoolError(WidgetServerError):
    """A code file that cannot be read at all (bad encoding, no code column)."""


def generate_code(code_format: str) -> str:
    """Fill every ``{XXXX}`` (letters and digits) and ``{9999}`` (digits) with random characters."""

    def fill(match: re.Match[str]) -> str:
        return "".join(secrets.choice(_DIGITS if ch == "9" else _LETTERS) for ch in match.group(1))

    return _PLACEHOLDER.sub(fill, code_format)


def code_candidates(code_format: str, n: int = 4) -> list[str]:
    return [generate_code(code_format) for _ in range(n)]


def is_valid_code(code: str) -> bool:
    return bool(_CODE.match(code))


def parse_code_pool(data: bytes) -> tuple[list[str], list[tuple[int, str]]]:
    """Codes from a CSV exported by Shopify (``Code`` column), WooCommerce (``post_title`` or
    ``code``) or a plain one-code-per-line file. Returns (codes, [(line, reason)]) and raises
    CodePoolError when the file cannot be read as text or has no recognisable code column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CodePoolError("the file is not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [], []
    header = [h.strip().lower() for h in rows[0]]
    column = next((header.index(c) for c in _CODE_COLUMNS if c in header), None)
    if column is None:
        if len(rows[0]) != 1:
            raise CodePoolError(
                "no code column: name it 'Code' (or export from Shopify/WooCommerce)"
            )
        column, body, first_line = 0, rows, 1
    else:
        body, first_line = rows[1:], 2
    codes: list[str] = []
    errors: list[tuple[int, str]] = []
    seen: set[str] = set()
    for offset, row in enumerate(body):
        line = first_line + offset
        if not row or not any(cell.strip() for cell in row):
            continue
        code = row[column].strip() if column < len(row) else ""
        if not is_valid_code(code):
            errors.append((line, f"not a usable code: {code[:40]!r}"))
        elif code.upper() in seen:
            errors.append((line, f"duplicate code {code!r}"))
        else:
            seen.add(code.upper())
            codes.append(code)
    return codes, errors
