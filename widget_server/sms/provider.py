"""Sending SMS through a Twilio-style Messages API, and the settings that turn SMS on.

``POST {SMS_API_URL}/2010-04-01/Accounts/{SMS_ACCOUNT_SID}/Messages.json``, form-encoded ``To``,
``From`` (or ``MessagingServiceSid`` when ``SMS_FROM`` starts with ``MG``), ``Body`` and
``StatusCallback``, with HTTP Basic auth ``AccountSid:AuthToken``; the answer is JSON with the
message's ``sid`` and ``status``. Failures are sorted like the email transports': failing to
connect, 429, 5xx and refused credentials (401, 403) are transient (retried), other 4xx
permanent; a refusal naming the number (21211 invalid, 21610 the recipient sent STOP, 21614 not
a mobile number) suppresses it; a connection that breaks after the request went out is uncertain
(never retried: at most once).

Without a provider, ``SMS_OUTBOX_DIR`` writes each text as a JSON file into a folder instead
(:class:`SmsOutbox`): for the demo and for trying SMS steps; the provider's webhooks are then off.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..errors import ConfigurationError, WidgetServerError

DEFAULT_API_URL = "https://api.twilio.com"
# Provider error codes that say the number itself is unusable (suppress it).
SUPPRESSING_CODES = {21211: "invalid", 21610: "stopped", 21614: "invalid", 21217: "invalid"}


@dataclass(frozen=True, slots=True)
class SmsSettings:
    """``SMS_API_URL``, ``SMS_ACCOUNT_SID``, ``SMS_AUTH_TOKEN`` (left out of ``repr``) and
    ``SMS_FROM`` (a number, or a messaging service sid ``MG...``): the provider is used only
    with all of the last three. ``SMS_OUTBOX_DIR``: without a provider, texts are written there."""

    api_url: str = DEFAULT_API_URL
    account_sid: str = ""
    auth_token: str = field(default="", repr=False)
    sender: str = ""
    outbox_dir: str = ""

    @property
    def enabled(self) -> bool:
        """Whether a provider is configured (its webhooks can be checked)."""
        return bool(self.account_sid and self.auth_token and self.sender)


def sms_settings_from_env(env: Mapping[str, str]) -> SmsSettings:
    """Read the SMS settings; ConfigurationError when only some of them are set or the API URL
    is not http(s)."""
    api_url = (env.get("SMS_API_URL") or DEFAULT_API_URL).rstrip("/")
    if not api_url.startswith(("https://", "http://")):
        raise ConfigurationError(f"SMS_API_URL must be an http(s) URL, got {api_url!r}")
    values = {name: (env.get(name) or "").strip() for name in ("SMS_ACCOUNT_SID", "SMS_AUTH_TOKEN")}
    values["SMS_FROM"] = (env.get("SMS_FROM") or "").strip()
    given = [name for name, value in values.items() if value]
    if given and len(given) != len(values):
        missing = ", ".join(name for name, value in values.items() if not value)
        raise ConfigurationError(f"SMS is half configured: {missing} missing")
    return SmsSettings(
        api_url=api_url,
        account_sid=values["SMS_ACCOUNT_SID"],
        auth_token=values["SMS_AUTH_TOKEN"],
        sender=values["SMS_FROM"],
        outbox_dir=(env.get("SMS_OUTBOX_DIR") or "").strip(),
    )


class SmsSendError(WidgetServerError):
    """The message was not (known to be) accepted by the provider."""


class SmsTransientError(SmsSendError):
    """Certainly not accepted (unreachable, 429, 5xx, refused credentials): safe to retry."""


class SmsUncertainError(SmsSendError):
    """The connection broke after the request went out: it may have been accepted."""


class SmsRefused(SmsSendError):
    """The provider refused the message for good; ``code`` is its error code (0: none given),
    ``suppress`` the reason to suppress the number for (``""``: the number is not at fault)."""

    def __init__(self, message: str, *, code: int, suppress: str) -> None:
        super().__init__(message)
        self.code = code
        self.suppress = suppress


@dataclass(frozen=True, slots=True)
class SmsReceipt:
    sid: str
    status: str


class SmsSender:
    """Sends one SMS per call through the Messages API."""

    def __init__(self, settings: SmsSettings, client: httpx.AsyncClient) -> None:
        if not settings.enabled:
            raise ConfigurationError("SMS needs SMS_ACCOUNT_SID, SMS_AUTH_TOKEN and SMS_FROM")
        self.settings = settings
        self._client = client
        self.url = f"{settings.api_url}/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    async def send(self, to: str, body: str, *, status_callback: str = "") -> SmsReceipt:
        """Hand the message to the provider or raise SmsTransientError, SmsRefused or
        SmsUncertainError."""
        s = self.settings
        form = {"To": to, "Body": body}
        form["MessagingServiceSid" if s.sender.startswith("MG") else "From"] = s.sender
        if status_callback:
            form["StatusCallback"] = status_callback
        try:
            response = await self._client.post(
                self.url, data=form, auth=(s.account_sid, s.auth_token)
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise SmsTransientError(f"SMS API unreachable: {exc}") from exc
        except httpx.HTTPError as exc:
            raise SmsUncertainError(f"SMS API failed after sending: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                answer = response.json()
                return SmsReceipt(str(answer["sid"]), str(answer.get("status", "")))
            except (ValueError, KeyError, TypeError):
                # Accepted, but we cannot tell which message it is: it went out.
                return SmsReceipt("", "unknown")
        if status == 429 or status >= 500:
            raise SmsTransientError(f"SMS API answered {status}")
        if status in (401, 403):  # the operator fixes the credentials; the message waits
            raise SmsTransientError(
                f"SMS API refused the credentials ({status}): check SMS_ACCOUNT_SID and "
                "SMS_AUTH_TOKEN"
            )
        code, text = _error(response)
        raise SmsRefused(
            f"SMS API answered {status}: {code} {text}".strip(),
            code=code,
            suppress=SUPPRESSING_CODES.get(code, ""),
        )


class SmsOutbox:
    """Writes each text as a JSON file (``sid``, ``to``, ``body``, ``status_callback``, ``at``)
    into a folder instead of sending it: for the demo and for trying SMS steps without a
    provider. Never fails but for the disk."""

    def __init__(self, settings: SmsSettings) -> None:
        if not settings.outbox_dir:
            raise ConfigurationError("the SMS outbox needs SMS_OUTBOX_DIR")
        self.settings = settings
        self.directory = Path(settings.outbox_dir)

    async def send(self, to: str, body: str, *, status_callback: str = "") -> SmsReceipt:
        sid = "OB" + secrets.token_hex(16)
        now = time.time()
        record = {"sid": sid, "to": to, "body": body, "status_callback": status_callback,
                  "at": now}  # fmt: skip
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{now:.6f}-{to.lstrip('+')}.sms.json"
            path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            raise SmsTransientError(f"the SMS outbox cannot be written: {exc}") from exc
        return SmsReceipt(sid, "outbox")


SmsChannel = SmsSender | SmsOutbox


def _error(response: httpx.Response) -> tuple[int, str]:
    """The provider's error code and message from a refusal (0 and "" when it gave none)."""
    try:
        answer = response.json()
    except ValueError:
        return 0, ""
    if not isinstance(answer, dict):
        return 0, ""
    try:
        code = int(answer.get("code") or 0)
    except (TypeError, ValueError):
        code = 0
    return code, str(answer.get("message") or "")[:200]
