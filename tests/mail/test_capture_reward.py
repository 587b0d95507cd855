"""An email capture keeps its promise: the code on screen at once, by email with consent (after
the confirmation where the site asks for double opt-in), nothing by email without; captures and
captures with consent counted apart. A server and a worker of their own, a real SMTP server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import redis

from widget_server.mail.flows import MailFlowStore
from widget_server.mail.jobs import reward_job_id
from widget_server.offers.campaign_store import CampaignStore
from widget_server.store.client import open_store

from ..mail_support import IsolatedShop, fast_config, isolated_shop
from ..support import ROOT, Client, campaign_counts, new_visitor

EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
CONFIRM_LINK = re.compile(r"https?://[^\s]+/v1/mail/confirm\?t=[A-Za-z0-9_.%-]+")


def capture_campaign(cid: str, **offer: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "name": "Newsletter",
        "status": "active",
        "variants": [{
            "key": "a",
            "offer": {"kind": "email_capture", "headline": "Get 5 EUR off",
                      "body": "Join the newsletter.", "cta_label": "Send me the code", **offer},
            "discount": {"type": "fixed", "amount": 5, "code_strategy": "generated",
                         "code_format": "HELLO-{XXXXXX}", "valid_minutes": 60 * 24 * 14},
        }],
    }  # fmt: skip


def setup(shop: IsolatedShop, *, double_opt_in: bool = False, **offer: Any) -> str:
    site = shop.add_site()

    async def save() -> None:
        client = open_store(shop.server.redis_url)
        try:
            await CampaignStore(client, shop.keys).save(
                site, capture_campaign("news", **offer), author="tests"
            )
            await MailFlowStore(client, shop.keys).save(
                site, fast_config(3600.0, double_opt_in=double_opt_in)
            )
        finally:
            await client.aclose()

    asyncio.run(save())
    return site


def captured(
    shop: IsolatedShop, site: str, email: str, consent: bool, **hello: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A visitor sees the capture, submits ``email``; returns (visitor, offer, reward)."""
    visitor = new_visitor()
    with Client(shop.server.ws_url) as c:
        c.hello(site, visitor, **hello)
        offer = c.signal_answer(EXIT)
        assert offer is not None and offer["kind"] == "email_capture"
        assert "code" not in offer  # the code is for the address, not for the exit
        c.painted(offer)
        sent = c.send({"type": "offer_capture", "offer": offer["id"], "claim": offer["claim"],
                       "email": email, "consent": consent})  # fmt: skip
        assert c.answer(sent)["type"] == "ack"
        reward = c.recv_until("reward")
    return visitor, offer, reward


def stats(r: redis.Redis, shop: IsolatedShop, site: str) -> dict[str, float]:
    return campaign_counts(r, site, "news", shop.keys)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def mails_to(shop: IsolatedShop, address: str) -> list[EmailMessage]:
    return [m for m in shop.sink.messages() if m["To"] == address]


def test_a_capture_shows_its_code_and_emails_it_only_with_consent(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    with isolated_shop(redis_url, tmp_path) as shop:
        site = setup(shop, privacy_url="https://shop.test/privacy")
        silent = f"no-consent@{site}.test"
        visitor, offer, reward = captured(shop, site, silent, consent=False)
        # What the form said before: the sentence agreed to, both button labels, the policy.
        assert offer["consent_label"].startswith("Email me offers")
        assert offer["reward"] == {
            "code": True, "submit_with_email": "Send me the code",
            "submit_on_screen": "Show my code", "privacy_label": "Privacy policy",
        }  # fmt: skip
        assert offer["privacy_url"] == "https://shop.test/privacy"
        assert reward["code"].startswith("HELLO-") and reward["note"] == ""
        assert reward["text"] == "Thank you! Here is your code:"
        profile = r.hgetall(shop.keys.profile(site, visitor))
        assert profile["email"] == silent and profile["email_consent"] == "0"
        assert r.zscore(shop.keys.mail_due(), reward_job_id(site, visitor, "news")) is None

        address = f"ada@{site}.test"
        visitor, _, reward = captured(shop, site, address, consent=True)
        assert reward["note"] == f"We have also sent it to {address}."
        mail = wait_for(lambda: mails_to(shop, address), "the code's email")[0]
        assert reward["code"] in text_of(mail) and reward["code"] in str(mail["Subject"])
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        record = r.hgetall(shop.keys.profile(site, visitor))
        assert record["email_consent"] == "1" and record["email_consent_source"] == "widget"
        wording = json.loads(
            r.hget(shop.keys.consent_wordings(site), record["email_consent_wording"]) or "{}"
        )
        assert wording["text"] == offer["consent_label"] and wording["campaign"] == "news"
        # Counted apart: two captures, one with consent; both shown, both exposed.
        assert stats(r, shop, site) == {"exposures:a": 2.0, "impressions:a": 2.0,
                                        "captures:a": 2.0, "consented_captures:a": 1.0}  # fmt: skip
        assert mails_to(shop, silent) == []
        # The report says both numbers (JSON, CSV and text alike).
        env = {**os.environ, "REDIS_URL": redis_url, "WIDGET_REDIS_PREFIX": shop.keys.prefix}

        def report(*flags: str) -> str:
            run = subprocess.run(
                [sys.executable, "-m", "widget_server.cli", "report", "news", "--site", site,
                 *flags], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60,
            )  # fmt: skip
            assert run.returncode == 0, run.stderr
            return run.stdout

        row = json.loads(report("--json"))["report"]["variants"][0]
        assert (row["captures"], row["consented_captures"], row["impressions"]) == (2, 1, 2)
        assert "a: 2 email addresses captured, 1 with consent to email" in report()


def test_under_double_opt_in_the_code_follows_the_confirmation(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    with isolated_shop(redis_url, tmp_path) as shop:
        site = setup(shop, double_opt_in=True, consent_label={"de": "Ja, schickt mir Angebote."})
        address = f"grace@{site}.test"
        visitor, offer, reward = captured(shop, site, address, consent=True, lang="de-DE")
        assert offer["consent_label"] == "Ja, schickt mir Angebote."  # the page's language
        assert offer["reward"]["submit_on_screen"] == "Code anzeigen"
        assert reward["code"].startswith("HELLO-")
        assert reward["note"].startswith("Bestätigen Sie Ihre Adresse")
        confirmation = wait_for(lambda: mails_to(shop, address), "the confirmation email")[0]
        assert len(mails_to(shop, address)) == 1  # not the code yet
        link = CONFIRM_LINK.search(text_of(confirmation))
        assert link is not None
        assert httpx.post(link.group(0)).status_code == 200
        mails = wait_for(lambda: len(mails_to(shop, address)) == 2 and mails_to(shop, address),
                         "the code after the confirmation")  # fmt: skip
        assert reward["code"] in text_of(mails[1])
        assert "Ihr Code" in str(mails[1]["Subject"])  # the language of the page it came from
        assert "reward_pending" not in r.hgetall(shop.keys.profile(site, visitor))


def test_a_capture_for_an_offer_never_painted_gives_nothing(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    with isolated_shop(redis_url, tmp_path) as shop:
        site = setup(shop)
        with Client(shop.server.ws_url) as c:
            visitor = new_visitor()
            c.hello(site, visitor)
            offer = c.signal_answer(EXIT)
            assert offer is not None
            forged = c.send({"type": "offer_capture", "offer": offer["id"],
                             "claim": offer["claim"], "email": f"x@{site}.test",
                             "consent": True})  # fmt: skip
            c.send({"type": "ping"})
            seen = []
            while not seen or seen[-1]["type"] != "pong":
                seen.append(c.recv())
            assert {"type": "ack", "ids": [forged]} in seen  # the address is recorded
            assert "reward" not in [m["type"] for m in seen]
        assert "captures:a" not in stats(r, shop, site)
