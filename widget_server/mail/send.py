"""Handing finished messages to the outside world: SMTP or a signed webhook, rate limited.

Transports sort every failure into one of three errors, because the delivery guarantee depends
on it: :class:`TransientSendError` (certainly not accepted; safe to retry),
:class:`PermanentSendError` (refused for good) and :class:`UncertainSendError` (the connection
broke after the message was handed over: it may have been accepted, so it is never retried).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import httpx
from redis.asyncio import Redis

from ..errors import ConfigurationError, WidgetServerError
from ..store.keys import Keys
from ..store.scripts import Scripts

TlsMode = Literal["plain", "starttls", "implicit"]
_SCHEMES: dict[str, tuple[TlsMode, int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("implicit", 465),
}


class SendError(WidgetServerError):
    """The message was not (known to be) delivered to the relay."""


class TransientSendError(SendError):
    """Refused or failed before the relay accepted the message: retrying cannot duplicate it."""


class PermanentSendError(SendError):
    """Refused for good. ``recipient_refused`` marks a hard bounce of the recipient address."""

    def __init__(self, message: str, *, recipient_refused: bool = False) -> None:
        super().__init__(message)
        self.recipient_refused = recipient_refused


class UncertainSendError(SendError):
    """The connection failed after the message was handed over; it may have been delivered."""


class MailTransport(Protocol):
    async def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        """Deliver ``message`` to the relay or raise one of the :class:`SendError` kinds."""


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how to reach the relay. ``ca_file`` is a PEM file of extra certificate
    authorities to trust (a private CA); the password is left out of ``repr``."""

    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    tls: TlsMode = "plain"
    timeout_s: float = 30.0
    ca_file: str = ""


def parse_smtp_url(url: str) -> SmtpConfig:
    """Parse ``SMTP_URL``: ``smtp://`` (plain, port 25), ``smtp+starttls://`` (STARTTLS required,
    587) or ``smtps://`` (implicit TLS, 465), with optional percent-encoded ``user:pass@``,
    ``?timeout=SECONDS`` and, with TLS, ``?ca_file=PATH`` (a PEM file of extra trusted CAs).
    Raises ConfigurationError naming what is wrong (never the password)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"SMTP_URL must start with {', '.join(s + '://' for s in _SCHEMES)}"
        )
    tls, default_port = _SCHEMES[parts.scheme]
    if not parts.hostname:
        raise ConfigurationError("SMTP_URL has no host")
    query = parse_qs(parts.query)
    try:
        port = parts.port or default_port
        timeout = float(query.get("timeout", ["30"])[0])
    except ValueError:
        raise ConfigurationError("SMTP_URL has an invalid port or timeout") from None
    if not 0 < timeout <= 600:  # also refuses nan
        raise ConfigurationError("SMTP_URL timeout must be between 0 and 600 seconds")
    ca_file = query.get("ca_file", [""])[0]
    if ca_file and tls == "plain":
        raise ConfigurationError("SMTP_URL ca_file needs smtp+starttls:// or smtps://")
    config = SmtpConfig(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        tls=tls,
        timeout_s=timeout,
        ca_file=ca_file,
    )
    if ca_file:  # fail at start-up, not at the first send
        _load_ca_file(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ca_file)
    return config


def _load_ca_file(context: ssl.SSLContext, path: str) -> None:
    """Trust the CAs in ``path`` too; ConfigurationError unless it is a readable PEM file with
    a certificate."""
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ConfigurationError(f"SMTP_URL ca_file {path!r} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigurationError(f"SMTP_URL ca_file {path!r}: {exc.strerror}") from None


def smtp_tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    """The client TLS context for ``config`` (None for plain SMTP): certificate and host name
    checked against the system's trusted CAs (which ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
    replace), plus the CAs in ``ca_file``. Raises ConfigurationError for an unusable ca_file."""
    if config.tls == "plain":
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if config.ca_file:
        _load_ca_file(context, config.ca_file)
    return context


class OutboxTransport:
    """Writes each message as an ``.eml`` file into a directory instead of sending it: for the
    demo and for trying flows without a mail relay."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "@.-_" else "_" for ch in recipient)[:80]
        name = f"{time.time():.6f}-{safe}.eml"
        (self.directory / name).write_bytes(bytes(message))


class SmtpTransport:
    """Sends each message over its own SMTP connection, step by step, to classify failures.

    With ``smtp+starttls://`` the connection is upgraded before anything else is said: a server
    that does not offer STARTTLS gets neither the login nor the message. The login always
    follows the TLS handshake. Nothing the transport raises or logs contains the password.
    """

    def __init__(self, config: SmtpConfig, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._tls_context = tls_context or smtp_tls_context(config)

    async def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host,
            port=c.port,
            use_tls=c.tls == "implicit",
            start_tls=False,  # upgraded explicitly in _open, never opportunistically
            timeout=c.timeout_s,
            tls_context=self._tls_context,
        )
        try:
            await self._open(client)
            try:
                await client.mail(sender)
            except aiosmtplib.SMTPResponseException as exc:
                raise _refused(exc, "sender") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise TransientSendError(f"SMTP failed before DATA: {exc}") from exc
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPResponseException as exc:
                raise _refused(exc, "recipient") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise TransientSendError(f"SMTP failed before DATA: {exc}") from exc
            try:
                await client.data(message.as_bytes())
            except aiosmtplib.SMTPResponseException as exc:
                raise _refused(exc, "message") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise UncertainSendError(f"SMTP connection lost during DATA: {exc}") from exc
        finally:
            await _close(client)

    async def _open(self, client: aiosmtplib.SMTP) -> None:
        """Connect, upgrade to TLS when configured, log in. Every failure here is transient:
        nothing was handed over, and what is wrong (the relay, its certificate, the
        credentials) is fixed outside the message, so it waits for the next attempt."""
        c = self.config
        where = f"{c.host}:{c.port}"
        try:
            await client.connect()
            if c.tls == "starttls":
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise TransientSendError(
                        f"the SMTP server at {where} does not offer STARTTLS; SMTP_URL asks "
                        "for smtp+starttls://, so nothing is sent without encryption"
                    )
                await client.starttls()
            if c.username:
                await client.login(c.username, c.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are fixed by the operator; the email should wait, not die.
            raise TransientSendError(
                f"SMTP login as {c.username!r} at {where} failed: {exc.code} "
                "(check the user name and password in SMTP_URL)"
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(_connection_problem(exc, where)) from exc


def _connection_problem(exc: BaseException, where: str) -> str:
    """A message for a failure to connect that names a TLS problem when there is one."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the SMTP server at {where} presented a certificate that is not trusted "
                f"({cause.verify_message}); for a private CA add ?ca_file=PATH to SMTP_URL"
            )
        if isinstance(cause, ssl.SSLError):
            hint = ""
            if cause.reason == "WRONG_VERSION_NUMBER":  # a plain-text greeting, not TLS
                hint = "; does this port expect smtp+starttls:// rather than smtps://?"
            return f"TLS with the SMTP server at {where} failed: {cause.reason or cause}{hint}"
        cause = cause.__cause__ or cause.__context__
    return f"SMTP connection to {where} failed: {exc}"


def _refused(exc: aiosmtplib.SMTPResponseException, stage: str) -> SendError:
    text = f"SMTP refused the {stage}: {exc.code} {exc.message}"
    if 400 <= exc.code < 500:
        return TransientSendError(text)
    return PermanentSendError(text, recipient_refused=stage == "recipient")


async def _close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=HEX`` of HMAC-SHA256(secret, ``timestamp "." body``), as on the orders webhook."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class WebhookTransport:
    """POSTs each message as JSON to an HTTP endpoint (an email API or the shop's own mailer).

    Body: ``{"from", "to", "subject", "message_id", "headers", "text", "html"}``; headers
    ``X-Widget-Timestamp`` and ``X-Widget-Signature`` as in :func:`webhook_signature`. A 2xx
    answer is delivery; 408/429/5xx and failures to connect are transient; other 4xx permanent.
    """

    def __init__(self, url: str, secret: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self._secret = secret
        self._client = client

    async def send(self, message: EmailMessage, *, sender: str, recipient: str) -> None:
        parts = {
            part.get_content_type(): str(part.get_content())
            for part in message.iter_parts()
            if isinstance(part, EmailMessage)
        }
        body = json.dumps(
            {
                "from": str(message["From"]),
                "to": recipient,
                "subject": str(message["Subject"]),
                "message_id": str(message["Message-ID"]),
                "headers": {
                    name: str(message[name])
                    for name in ("Date", "List-Unsubscribe", "List-Unsubscribe-Post")
                },
                "text": parts.get("text/plain", ""),
                "html": parts.get("text/html", ""),
            }
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-widget-timestamp": timestamp,
            "x-widget-signature": webhook_signature(self._secret, timestamp, body),
        }
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientSendError(f"webhook unreachable: {exc}") from exc
        except httpx.HTTPError as exc:
            raise UncertainSendError(f"webhook failed after sending: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise TransientSendError(f"webhook answered {status}")
        raise PermanentSendError(f"webhook answered {status}")


class DomainRateLimiter:
    """A token bucket in Redis per recipient domain, shared by every worker process."""

    def __init__(self, redis: Redis, keys: Keys, *, per_minute: float, burst: int) -> None:
        self._script = Scripts.of(redis).sendrate_wait
        self._keys = keys
        self._rate = per_minute / 60.0
        self._burst = burst

    async def acquire(self, domain: str, now: float) -> float:
        """Take a send token for ``domain``: 0.0, or the seconds to wait before trying again."""
        wait_ms = await self._script(
            keys=[self._keys.mail_rate(domain.lower())], args=[repr(now), self._rate, self._burst]
        )
        return int(wait_ms) / 1000.0
