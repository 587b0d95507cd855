"""Signed, expiring link tokens for emails, and the links built from them.

A token is ``BASE64URL(JSON payload) "." BASE64URL(MAC)`` where MAC is the first 18 bytes of
HMAC-SHA256 over ``purpose NUL payload`` with a key derived from the server's secret key. The
purpose (``click``, ``restore``, ``unsub``, ``confirm``) is part of the MAC, so a token made for
one link can never be used for another. Every payload carries its expiry ``x`` (unix seconds).

Links in emails never point at the shop directly: each goes through ``/v1/mail/click`` with a
token that signs the exact target (UTM tags included), so the redirect endpoint can only ever
send a browser to a URL this server put in an email.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import WidgetServerError

CLICK_TTL_S = 90 * 24 * 3600
RESTORE_TTL_S = 14 * 24 * 3600
# Unsubscribe links must keep working long after the email was sent.
UNSUBSCRIBE_TTL_S = 400 * 24 * 3600
# Double opt-in links: long enough for a weekend away, short enough to mean "just now".
CONFIRM_TTL_S = 7 * 24 * 3600
MAX_TOKEN_CHARS = 8192
MAX_RESTORE_LINES = 20
_MAC_BYTES = 18


class BadToken(WidgetServerError):
    """A link token that is malformed, tampered with, or made for another purpose."""


class ExpiredToken(BadToken):
    """An authentic token past its expiry; ``payload`` is trustworthy but stale."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__("the link has expired")
        self.payload = payload


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies link tokens with a key derived from the server's secret key."""

    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < 16:
            raise ValueError("the secret key must be at least 16 characters")
        self._key = hmac.new(secret_key.encode(), b"widget-server mail links v1", "sha256").digest()

    def _mac(self, purpose: str, body: str) -> bytes:
        message = purpose.encode() + b"\x00" + body.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, purpose: str, payload: dict[str, Any], *, expires: float) -> str:
        body = _b64(json.dumps({**payload, "x": int(expires)}, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(purpose, body))}"

    def verify(self, purpose: str, token: str, *, now: float) -> dict[str, Any]:
        """The payload of an authentic, unexpired token for ``purpose``.

        Raises BadToken for anything else, ExpiredToken (a BadToken) when only the time is wrong.
        """
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise BadToken("malformed token")
        body, mac = token.split(".")
        try:
            given = _unb64(mac)
            payload = json.loads(_unb64(body))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise BadToken("malformed token") from None
        if not hmac.compare_digest(given, self._mac(purpose, body)):
            raise BadToken("the token signature does not match")
        if not isinstance(payload, dict) or not isinstance(payload.get("x"), int):
            raise BadToken("malformed token")
        if payload["x"] < now:
            raise ExpiredToken(payload)
        return payload


def with_utm(url: str, **tags: str) -> str:
    """``url`` with ``utm_<name>`` query parameters set (existing ones replaced)."""
    parts = urlsplit(url)
    names = {f"utm_{name}" for name in tags}
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    query += [(f"utm_{name}", value) for name, value in tags.items() if value]
    return urlunsplit(parts._replace(query=urlencode(query)))


def absolute(url: str, base: str) -> str:
    """An absolute http(s) URL for ``url`` (root-relative paths join ``base``), or ``""``."""
    if url.startswith("/") and not url.startswith("//"):
        url = base.rstrip("/") + url
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else ""


def restore_target(shop_url: str, path: str, items: list[list[Any]], code: str) -> str:
    """The shop's cart-restore URL: ``item=ID:QTY`` once per line, then ``code`` if any."""
    query = [("item", f"{item_id}:{quantity}") for item_id, quantity in items]
    if code:
        query.append(("code", code))
    return f"{shop_url.rstrip('/')}{path}?{urlencode(query)}"


@dataclass(frozen=True, slots=True)
class MailLinks:
    """The links of one email: every shop link tracked, UTM-tagged and signed."""

    signer: LinkSigner
    public_url: str
    site: str
    flow: str
    step: int
    now: float
    utm_source: str
    utm_medium: str
    visitor: str = ""  # carried by click links, so a click can be attributed to the flow

    def _endpoint(self, path: str, token: str) -> str:
        return f"{self.public_url.rstrip('/')}{path}?{urlencode({'t': token})}"

    def tracked(self, target: str) -> str:
        """A click-tracking link to ``target`` (which gets UTM tags); ``""`` for a non-http URL."""
        if not absolute(target, "https://invalid"):
            return ""
        url = with_utm(
            target,
            source=self.utm_source,
            medium=self.utm_medium,
            campaign=self.flow,
            content=f"step{self.step + 1}",
        )
        payload: dict[str, Any] = {"s": self.site, "u": url, "f": self.flow, "n": self.step}
        if self.visitor:
            payload["v"] = self.visitor
        return self._endpoint(
            "/v1/mail/click", self.signer.sign("click", payload, expires=self.now + CLICK_TTL_S)
        )

    def restore(self, visitor: str, items: list[tuple[str, int]], code: str = "") -> str:
        """A link that rebuilds the visitor's cart in the shop (see :func:`restore_target`);
        the first :data:`MAX_RESTORE_LINES` lines, so the link stays short enough for mailers."""
        payload = {
            "s": self.site,
            "v": visitor,
            "i": [[item_id, quantity] for item_id, quantity in items[:MAX_RESTORE_LINES]],
            "c": code,
            "f": self.flow,
            "n": self.step,
        }
        token = self.signer.sign("restore", payload, expires=self.now + RESTORE_TTL_S)
        return self._endpoint("/v1/mail/restore", token)

    def unsubscribe(self, email: str) -> str:
        payload = {"s": self.site, "m": email, "f": self.flow}
        token = self.signer.sign("unsub", payload, expires=self.now + UNSUBSCRIBE_TTL_S)
        return self._endpoint("/v1/mail/unsubscribe", token)

    def utm_tags(self) -> dict[str, str]:
        return {
            "source": self.utm_source,
            "medium": self.utm_medium,
            "campaign": self.flow,
            "content": f"step{self.step + 1}",
        }


def confirm_link(
    signer: LinkSigner,
    public_url: str,
    *,
    site: str,
    visitor: str,
    email: str,
    consent_at: str,
    now: float,
) -> str:
    """The double opt-in link of a confirmation email. It names the exact consent it confirms
    (the profile's ``email_consent_at``): a later consent, or another address, needs a new one."""
    payload = {"s": site, "v": visitor, "m": email, "c": consent_at}
    token = signer.sign("confirm", payload, expires=now + CONFIRM_TTL_S)
    return f"{public_url.rstrip('/')}/v1/mail/confirm?{urlencode({'t': token})}"
