"""Texts without a provider (``SMS_OUTBOX_DIR``, as the demo runs): the phone opt-in code and the
flows' SMS steps are written as files through the real routes and worker; the provider's
webhooks are off."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from widget_server.errors import ConfigurationError
from widget_server.mail.flows import Flow, MailConfig
from widget_server.mail.send import OutboxTransport
from widget_server.mail.sms_routes import sms_routes
from widget_server.sms.provider import SmsOutbox, SmsSettings, sms_settings_from_env

from ..mail_support import PUBLIC_URL, UNLIMITED, mail_context, make_site, shopper, work_due
from .test_channel import CART, sms_step

PHONE = "+491701234567"


def texts(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.sms.json"))]


def test_the_outbox_is_read_from_the_environment() -> None:
    assert sms_settings_from_env({"SMS_OUTBOX_DIR": "/tmp/x"}).outbox_dir == "/tmp/x"
    assert not sms_settings_from_env({"SMS_OUTBOX_DIR": "/tmp/x"}).enabled  # no provider
    with pytest.raises(ConfigurationError, match="SMS_OUTBOX_DIR"):
        SmsOutbox(SmsSettings())


def test_codes_and_flow_texts_go_to_the_outbox_folder(redis_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    flow = Flow(name="cart", kind="cart", daily_cap=5,
                steps=[sms_step(0, "Your cart at {shop}: {link}")])  # fmt: skip

    async def main() -> None:
        settings = SmsSettings(outbox_dir=str(folder))
        async with mail_context(redis_url, sms=settings, outbox_dir=str(tmp_path)) as ctx:
            site = await make_site(ctx)
            await ctx.flows.save(site, MailConfig(flows=[flow], budget=UNLIMITED))
            who = await shopper(ctx, site, email_address=f"ann@{site}.test")
            app = Starlette(routes=sms_routes(lambda: ctx))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
                asked = await client.post(f"/v1/sms/optin?site={site}",
                                          json={"visitor": who.visitor, "phone": PHONE,
                                                "consent": True})  # fmt: skip
                assert asked.json() == {"status": "code_sent", "phone": PHONE}
                [code_text] = texts(folder)
                assert code_text["to"] == PHONE and code_text["sid"].startswith("OB")
                found = re.search(r"\b(\d{6})\b", code_text["body"])
                assert found is not None
                done = await client.post(
                    f"/v1/sms/confirm?site={site}",
                    json={"visitor": who.visitor, "code": found.group(1)},
                )
                assert done.json()["status"] == "confirmed"

                t0 = time.time()
                await ctx.scheduler.visitor_left(
                    site,
                    who.visitor,
                    now=t0,
                    cart=CART,
                    email=f"ann@{site}.test",
                    consent=True,
                    sms=True,
                )
                done_jobs = await work_due(ctx, OutboxTransport(tmp_path), until=t0, start=t0)
                assert [outcome for _, _, outcome in done_jobs] == ["sent"]
                flow_text = texts(folder)[-1]
                assert flow_text["body"].startswith(f"Your cart at {site}: {PUBLIC_URL}/v1/sms/l/")
                link = flow_text["body"].rsplit(" ", 1)[1]
                assert (await client.get(link)).status_code == 302

                # No provider: nothing can call back, and a call is refused as such.
                for path in ("/v1/sms/inbound", "/v1/sms/status"):
                    answer = await client.post(f"{path}?site={site}", data={"Body": "STOP"})
                    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "sms_off")

    asyncio.run(main())
