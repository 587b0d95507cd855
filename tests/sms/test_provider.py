"""The sender against a local server speaking the Twilio Messages API: what it posts, and how
it sorts the provider's answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from widget_server.errors import ConfigurationError
from widget_server.sms.provider import (
    SmsRefused,
    SmsSender,
    SmsSettings,
    SmsTransientError,
    sms_settings_from_env,
)

from ..sms_support import FROM_NUMBER, FakeMessagesApi


@pytest.fixture
def api() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi() as fake:
        yield fake


def send(settings: SmsSettings, to: str, body: str, callback: str = "") -> object:
    async def main() -> object:
        async with httpx.AsyncClient(timeout=10) as client:
            return await SmsSender(settings, client).send(to, body, status_callback=callback)

    return asyncio.run(main())


def test_settings_from_the_environment(api: FakeMessagesApi) -> None:
    assert not sms_settings_from_env({}).enabled
    assert sms_settings_from_env({}).api_url == "https://api.twilio.com"
    settings = sms_settings_from_env(api.env())
    assert settings.enabled and settings.api_url == api.url
    assert api.auth_token not in repr(settings)
    with pytest.raises(ConfigurationError, match="SMS_AUTH_TOKEN"):
        sms_settings_from_env({"SMS_ACCOUNT_SID": "AC1", "SMS_FROM": "+15005550006"})
    with pytest.raises(ConfigurationError, match="http"):
        sms_settings_from_env({**api.env(), "SMS_API_URL": "ftp://x"})


def test_a_message_reaches_the_provider(api: FakeMessagesApi) -> None:
    receipt = send(sms_settings_from_env(api.env()), "+4917012345678", "Hi €", "https://x/cb")
    assert receipt.sid.startswith("SM") and receipt.status == "queued"  # type: ignore[attr-defined]
    [message] = api.messages
    assert (message.to, message.sender, message.body) == ("+4917012345678", FROM_NUMBER, "Hi €")
    assert message.status_callback == "https://x/cb"


def test_failures_are_sorted(api: FakeMessagesApi) -> None:
    settings = sms_settings_from_env(api.env())
    api.fail_next = [503, 429]
    for _ in range(2):
        with pytest.raises(SmsTransientError):
            send(settings, "+4917012345678", "x")
    api.refuse = {"+4917000000000": 21211, "+4917000000001": 21610, "+4917000000002": 30007}
    with pytest.raises(SmsRefused) as invalid:
        send(settings, "+4917000000000", "x")
    assert (invalid.value.code, invalid.value.suppress) == (21211, "invalid")
    with pytest.raises(SmsRefused) as stopped:
        send(settings, "+4917000000001", "x")
    assert stopped.value.suppress == "stopped"
    with pytest.raises(SmsRefused) as other:
        send(settings, "+4917000000002", "x")
    assert other.value.suppress == ""
    wrong = SmsSettings(api.url, api.account_sid, "wrong-token", FROM_NUMBER)
    with pytest.raises(SmsTransientError, match="401"):
        send(wrong, "+4917012345678", "x")
    assert api.messages == []
    unreachable = SmsSettings("http://127.0.0.1:9", api.account_sid, api.auth_token, FROM_NUMBER)
    with pytest.raises(SmsTransientError):
        send(unreachable, "+4917012345678", "x")
