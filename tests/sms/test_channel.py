"""SMS as a second channel, through the real scheduler, worker, store and HTTP routes, against a
local server speaking the Twilio Messages API: phone double opt-in, SMS steps of a flow, the
provider's signed webhooks (STOP, START, status), and the budget and quiet hours shared with
email. The worker runs on a simulated clock (it takes its time from the caller)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from widget_server.admin.pages.mail import SKIP_WORDS, parse_counts
from widget_server.mail.context import MailContext
from widget_server.mail.flows import Budget, Flow, FlowStep, MailConfig, load_config
from widget_server.mail.routes import mail_routes
from widget_server.mail.send import OutboxTransport
from widget_server.mail.sms_routes import sms_routes
from widget_server.sms.phone import PhoneNumberError, normalize_phone
from widget_server.sms.provider import sms_settings_from_env
from widget_server.visitors.session_view import CartLine

from ..mail_support import PUBLIC_URL, UNLIMITED, mail_context, make_site, shopper, work_due
from ..sms_support import AUTH_TOKEN, FakeMessagesApi, SentSms, twilio_signature

PHONE = "+491701234567"
CART = [CartLine("sku-1", 2, 25.0, "Blue mug", "", "")]
HOUR, DAY = 3600.0, 86_400.0


@pytest.fixture
def api() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi() as fake:
        yield fake


def sms_step(minutes: float, text: str) -> FlowStep:
    return FlowStep(delay_minutes=minutes, channel="sms", sms_text={"en": text})


@dataclass
class SmsShop:
    ctx: MailContext
    api: FakeMessagesApi
    site: str
    client: httpx.AsyncClient
    outbox: OutboxTransport
    visitor: str = ""
    email: str = ""
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(f"{path}?site={self.site}", json=body)

    async def provider_post(
        self, path: str, params: dict[str, str], token: str = AUTH_TOKEN
    ) -> httpx.Response:
        url = f"{PUBLIC_URL}{path}?{urlencode({'site': self.site})}"
        signature = twilio_signature(token, url, params)
        return await self.client.post(url, data=params, headers={"x-twilio-signature": signature})

    async def text_us(self, body: str, sender: str = PHONE) -> httpx.Response:
        params = {"MessageSid": "SMx", "From": sender, "To": "+15005550006", "Body": body}
        return await self.provider_post("/v1/sms/inbound", params)

    async def opt_in(self, phone: str = PHONE) -> None:
        asked = await self.post(
            "/v1/sms/optin", {"visitor": self.visitor, "phone": phone, "consent": True}
        )
        assert asked.json() == {"status": "code_sent", "phone": normalize_phone(phone)}
        code = code_in(self.api.to(normalize_phone(phone))[-1])
        done = await self.post("/v1/sms/confirm", {"visitor": self.visitor, "code": code})
        assert done.json()["status"] == "confirmed", done.text

    async def leave(self, now: float) -> None:
        profile = await self.profile()
        await self.ctx.scheduler.visitor_left(
            self.site, self.visitor, now=now, cart=CART, email=self.email or None,
            consent=bool(self.email), sms=profile.get("sms_consent") == "1",
        )  # fmt: skip

    async def profile(self) -> dict[str, str]:
        raw = await self.ctx.redis.hgetall(self.ctx.keys.profile(self.site, self.visitor))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def run_until(self, until: float, start: float) -> None:
        """Let the worker handle everything due up to ``until``, in time order."""
        for moment, job, outcome in await work_due(self.ctx, self.outbox, until=until, start=start):
            self.outcomes.append((moment, f"{job.flow}:{job.step}", outcome))

    async def stats(self, flow: str = "cart") -> dict[str, int]:
        raw = await self.ctx.redis.hgetall(self.ctx.keys.mail_stats(self.site, flow))
        return {k.decode(): int(v) for k, v in raw.items()}

    def flow_sms(self) -> list[SentSms]:
        return [m for m in self.api.to(PHONE) if "code" not in m.body]


def code_in(message: SentSms) -> str:
    found = re.search(r"\b(\d{6})\b", message.body)
    assert found, message.body
    return found.group(1)


@contextlib.asynccontextmanager
async def sms_shop(
    redis_url: str,
    api: FakeMessagesApi,
    tmp_path: Path,
    config: MailConfig,
    *,
    email: bool = True,
    sms: bool = True,
    timezone: str = "UTC",
) -> AsyncIterator[SmsShop]:
    settings = sms_settings_from_env(api.env() if sms else {})
    async with mail_context(redis_url, sms=settings, outbox_dir=str(tmp_path)) as ctx:
        site = await make_site(ctx, timezone=timezone)
        await ctx.flows.save(site, config)
        address = f"ann@{site}.test" if email else ""
        who = await shopper(ctx, site, email_address=address or f"x@{site}.test", consent=email)
        app = Starlette(routes=[*mail_routes(lambda: ctx), *sms_routes(lambda: ctx)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
            yield SmsShop(ctx, api, site, client, OutboxTransport(tmp_path), who.visitor, address)


def two_sms_and_an_email(budget: Budget = UNLIMITED) -> MailConfig:
    return MailConfig(
        flows=[
            Flow(
                name="cart",
                kind="cart",
                daily_cap=20,
                steps=[
                    sms_step(0, "Your cart at {shop} is waiting: {link}"),
                    sms_step(60, "Still thinking? {link}"),
                    FlowStep(delay_minutes=120, template="cart", subject="Your cart"),
                ],
            )
        ],
        budget=budget,
    )


# --- configuration ------------------------------------------------------------------------------


def test_sms_steps_are_validated() -> None:
    step = sms_step(0, "Hi from {shop}: {link}")
    assert step.channel == "sms" and step.sms_text_for("de-CH") == "Hi from {shop}: {link}"
    with pytest.raises(ValidationError, match="needs its text"):
        FlowStep(delay_minutes=0, channel="sms")
    with pytest.raises(ValidationError, match="empty"):
        sms_step(0, "  ")
    with pytest.raises(ValidationError, match=r"\{name\} is not a placeholder"):
        sms_step(0, "Hi {name}")
    with pytest.raises(ValidationError, match="11 segments"):
        sms_step(0, "a" * (153 * 10 + 1))
    with pytest.raises(ValidationError, match=r"segments \(UCS-2\)"):
        sms_step(0, "ж" * 700)
    with pytest.raises(ValidationError, match="needs a subject"):
        FlowStep(delay_minutes=0, template="cart")
    # Steps saved before SMS existed read as email steps.
    old = '{"flows": [{"name": "c", "kind": "cart", "steps": [{"delay_minutes": 5, "template": '
    config = load_config(old + '"cart", "subject": "Hi"}]}]}')
    assert config.flows[0].steps[0].channel == "email"


def test_phone_numbers_are_normalised() -> None:
    assert normalize_phone("+49 (170) 123-45 67") == PHONE
    assert normalize_phone("0049 170 1234567") == PHONE
    for garbage, words in [
        ("0170 1234567", "country code"),
        ("+49 abc", "not a phone number"),
        ("+0123456789", "not a phone number"),
        ("+49 1", "not a phone number"),
        ("", "empty"),
    ]:
        with pytest.raises(PhoneNumberError, match=words):
            normalize_phone(garbage)


# --- the round trip -----------------------------------------------------------------------------


def test_opt_in_then_sms_steps_then_stop_and_start(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, two_sms_and_an_email()) as shop:
            asked = await shop.post(
                "/v1/sms/optin", {"visitor": shop.visitor, "phone": "+49 170 1234567",
                                  "consent": True},
            )  # fmt: skip
            assert asked.status_code == 200 and asked.json()["phone"] == PHONE
            [code_sms] = api.to(PHONE)
            code = code_in(code_sms)
            assert "profile" not in code_sms.body and not (await shop.profile()).get("phone")
            wrong = "000000" if code != "000000" else "111111"
            refused = await shop.post("/v1/sms/confirm", {"visitor": shop.visitor, "code": wrong})
            assert (refused.status_code, refused.json()["error"]) == (400, "wrong_code")
            done = await shop.post("/v1/sms/confirm", {"visitor": shop.visitor, "code": code})
            assert done.json() == {"status": "confirmed", "phone": PHONE}
            profile = await shop.profile()
            assert profile["phone"] == PHONE and profile["sms_consent"] == "1"
            assert profile["sms_confirmed_at"] and profile["sms_consent_source"] == "shop"
            again = await shop.post("/v1/sms/confirm", {"visitor": shop.visitor, "code": code})
            assert again.json()["error"] == "expired"  # a code works once

            t0 = time.time()
            await shop.leave(t0)
            await shop.run_until(t0, t0)
            [first] = shop.flow_sms()
            assert first.body.startswith(f"Your cart at {shop.site} is waiting: {PUBLIC_URL}/")
            assert first.status_callback == f"{PUBLIC_URL}/v1/sms/status?site={shop.site}"
            assert (await shop.stats())["sms_sent:0"] == 1

            link = first.body.rsplit(" ", 1)[1]
            clicked = await shop.client.get(link)
            assert clicked.status_code == 302
            target = urlsplit(clicked.headers["location"])
            assert target.netloc == "shop.test" and target.path == "/cart"
            query = parse_qs(target.query)
            assert query["item"] == ["sku-1:2"] and query["utm_medium"] == ["sms"]
            swapped = "A" if link[-10] != "A" else "B"  # a forged token fails its signature
            assert (await shop.client.get(link[:-10] + swapped + link[-9:])).status_code == 404

            for _ in range(2):  # counted once however often the provider calls
                assert (await shop.provider_post("/v1/sms/status", {
                    "MessageSid": first.sid, "MessageStatus": "delivered", "To": PHONE,
                })).status_code == 204  # fmt: skip
            stats = await shop.stats()
            assert (stats["sms_delivered:0"], stats["sms_clicks:0"]) == (1, 1)

            # A forged STOP is refused and changes nothing.
            forged = {"MessageSid": "SMy", "From": PHONE, "To": "+15005550006", "Body": "STOP"}
            bad = await shop.provider_post("/v1/sms/inbound", forged, token="not-the-token")
            assert bad.status_code == 403 and bad.json()["error"]["code"] == "bad_signature"
            unsigned = await shop.client.post(f"/v1/sms/inbound?site={shop.site}", data=forged)
            assert unsigned.status_code == 403
            pending = {j["step"] for j in await shop.ctx.scheduler.pending(shop.site, shop.visitor)}
            assert pending == {"1", "2"}

            assert (await shop.text_us("  stop ")).status_code == 200
            pending = {j["step"] for j in await shop.ctx.scheduler.pending(shop.site, shop.visitor)}
            assert pending == {"2"}  # the SMS step is cancelled, the email stays

            await shop.leave(t0 + 10)  # the visitor leaves again: step 2 is scheduled again
            await shop.run_until(t0 + 2 * HOUR + 60, t0 + 10)
            assert len(shop.flow_sms()) == 1
            assert (await shop.stats())["skipped:sms_suppressed"] == 1

            await shop.text_us("Start")
            await shop.leave(t0 + 3 * HOUR)
            await shop.run_until(t0 + 5 * HOUR, t0 + 3 * HOUR)
            assert [m.body for m in shop.flow_sms()][1].startswith("Still thinking? https://")
            assert (await shop.stats())["sms_sent:1"] == 1

    asyncio.run(main())


def test_email_only_visitors_skip_sms_steps_and_phone_only_ones_skip_emails(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, two_sms_and_an_email()) as shop:
            t0 = time.time()
            await shop.leave(t0)
            await shop.run_until(t0 + 3 * HOUR, t0)
            assert [o for _, _, o in shop.outcomes] == ["sms_no_phone", "sms_no_phone", "sent"]
        async with sms_shop(redis_url, api, tmp_path, two_sms_and_an_email(), email=False) as shop:
            await shop.opt_in()
            t0 = time.time()
            await shop.leave(t0)
            await shop.run_until(t0 + 3 * HOUR, t0)
            assert [o for _, _, o in shop.outcomes] == ["sent", "sent", "no_email"]
        async with sms_shop(redis_url, api, tmp_path, two_sms_and_an_email(), sms=False) as shop:
            off = await shop.post("/v1/sms/optin", {"visitor": shop.visitor, "phone": PHONE,
                                                     "consent": True})  # fmt: skip
            assert (off.status_code, off.json()["error"]) == (404, "sms_off")
            t0 = time.time()
            await shop.leave(t0)
            await shop.run_until(t0 + 3 * HOUR, t0)
            assert [o for _, _, o in shop.outcomes] == ["sms_off", "sms_off", "sent"]
            assert (await shop.stats())["skipped:sms_off"] == 2

    asyncio.run(main())


def test_budget_and_quiet_hours_are_shared_with_email(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    """One message a day, none 21-8 in the visitor's zone: the email at 10:00 spends the day,
    so the SMS due at 10:30 waits for the next day, whose start is quiet: it goes at 8:00."""
    zone = "Europe/Berlin"
    config = MailConfig(
        flows=[
            Flow(
                name="cart",
                kind="cart",
                daily_cap=20,
                steps=[
                    FlowStep(delay_minutes=0, template="cart", subject="Your cart"),
                    sms_step(30, "Your cart at {shop}: {link}"),
                ],
            )
        ],
        budget=Budget(per_day=1, per_week=3, quiet_hours=(21, 8)),
    )

    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, config, timezone=zone) as shop:
            await shop.opt_in()
            day = datetime.fromtimestamp(time.time() + 2 * DAY, ZoneInfo(zone))
            ten = day.replace(hour=10, minute=0, second=0, microsecond=0).timestamp()
            await shop.leave(ten)
            await shop.run_until(ten + 2 * DAY, ten)
            assert [o for _, _, o in shop.outcomes] == ["sent", "deferred", "deferred", "sent"]
            sent_at = shop.outcomes[-1][0]
            local = datetime.fromtimestamp(sent_at, ZoneInfo(zone))
            assert (local.date() - day.date()).days == 1 and local.hour == 8
            stats = await shop.stats()
            assert stats["held:sms_budget"] == 1 and stats["held:sms_quiet_hours"] == 1
            assert stats["sent:0"] == 1 and stats["sms_sent:1"] == 1
            assert len(shop.flow_sms()) == 1

    asyncio.run(main())


def test_codes_are_limited(redis_url: str, api: FakeMessagesApi, tmp_path: Path) -> None:
    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, two_sms_and_an_email()) as shop:
            body = {"visitor": shop.visitor, "phone": "call me", "consent": True}
            garbage = await shop.post("/v1/sms/optin", body)
            assert (garbage.status_code, garbage.json()["error"]) == (400, "invalid_phone")
            assert "country code" in garbage.json()["message"]
            frame = await shop.post("/v1/sms/optin", {"visitor": shop.visitor})
            assert frame.status_code == 400 and frame.json()["error"]["code"] == "invalid"
            body["phone"] = PHONE
            for _ in range(3):
                assert (await shop.post("/v1/sms/optin", body)).status_code == 200
            limited = await shop.post("/v1/sms/optin", body)
            assert (limited.status_code, limited.json()["error"]) == (429, "rate_limited")
            assert len(api.to(PHONE)) == 3
            code = code_in(api.to(PHONE)[-1])
            wrong = "000000" if code != "000000" else "111111"
            answers = [
                (
                    await shop.post("/v1/sms/confirm", {"visitor": shop.visitor, "code": wrong})
                ).json()["error"]
                for _ in range(6)
            ]
            assert answers == ["wrong_code"] * 5 + ["too_many_attempts"]
            late = await shop.post("/v1/sms/confirm", {"visitor": shop.visitor, "code": code})
            assert late.json()["error"] == "expired"  # the right code no longer works
            assert "phone" not in await shop.profile()

    asyncio.run(main())


def test_withdrawing_sms_consent_cancels_the_pending_sms(
    redis_url: str, api: FakeMessagesApi, tmp_path: Path
) -> None:
    async def main() -> None:
        async with sms_shop(redis_url, api, tmp_path, two_sms_and_an_email()) as shop:
            await shop.opt_in()
            t0 = time.time()
            await shop.leave(t0)
            steps = {j["step"] for j in await shop.ctx.scheduler.pending(shop.site, shop.visitor)}
            assert steps == {"0", "1", "2"}
            body = {"visitor": shop.visitor, "phone": PHONE, "consent": False}
            withdrawn = await shop.post("/v1/sms/optin", body)
            assert withdrawn.json() == {"status": "withdrawn"}
            steps = {j["step"] for j in await shop.ctx.scheduler.pending(shop.site, shop.visitor)}
            assert steps == {"2"}  # the email stays
            profile = await shop.profile()
            assert profile["sms_consent"] == "0" and profile["sms_consent_withdrawn_at"]
            await shop.leave(t0 + 10)
            await shop.run_until(t0 + 3 * HOUR, t0 + 10)
            assert [o for _, _, o in shop.outcomes] == ["sms_no_phone", "sms_no_phone", "sent"]

    asyncio.run(main())


def test_the_email_overview_counts_sms_steps() -> None:
    counts = parse_counts({b"sms_sent:1": b"3", b"sms_clicks:1": b"2", b"sent:0": b"5",
                           b"skipped:sms_no_phone": b"4", b"sms_delivered:1": b"3"})  # fmt: skip
    assert counts.steps == {"sent": {1: 3, 0: 5}, "clicks": {1: 2}}
    assert counts.skipped == {"sms_no_phone": 4} and counts.other == {"sms_delivered:1": 3}
    assert "STOP" in SKIP_WORDS["sms_suppressed"]
