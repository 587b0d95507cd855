"""Email consent records and double opt-in through the whole product: a real server process
(with and without a trusted country header), real `widget-server worker` processes, a real SMTP
server, the confirmation links clicked over HTTP, and the widget's overlay in a real Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import sync_playwright
from redis.asyncio import Redis

from widget_server.errors import ConfigurationError
from widget_server.mail.flows import MailFlowStore
from widget_server.mail.jobs import confirmation_job_id
from widget_server.mail.tokens import LinkSigner
from widget_server.settings import load_secret_key, settings_from_env
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry, new_site
from widget_server.wire import protocol as p

from ..mail_support import (
    Scenario,
    Shopper,
    SmtpSink,
    fast_config,
    running_worker,
    scenario,
    session_store,
    wait_until,
)
from ..support import ROOT, Client, ServerProcess, add_site, new_visitor

KEYS = Keys()
ORIGIN = "https://shop.test"
CONFIRM_LINK = re.compile(r"https?://[^\s]+/v1/mail/confirm\?t=[A-Za-z0-9_.%-]+")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def optin_server(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server that trusts the CF-IPCountry header for consent records."""
    server = ServerProcess(
        redis_url,
        tmp_path_factory.mktemp("optin"),
        WIDGET_CONSENT_COUNTRY_HEADER="CF-IPCountry",
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


@pytest.fixture(scope="module")
def workers(
    optin_server: ServerProcess, sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Two `widget-server worker` processes on the same queue, as in a real deployment."""
    env = {
        **os.environ,
        "REDIS_URL": optin_server.redis_url,
        "WIDGET_DATA_DIR": str(optin_server.data_dir),  # the server's secret key
        "SMTP_URL": sink.url,
        "MAIL_FROM": "shop@example.com",
        "MAIL_PUBLIC_URL": optin_server.url,
        "WIDGET_LOG_LEVEL": "info",
    }
    logs = tmp_path_factory.mktemp("workers")
    processes = []
    for n in range(2):
        with (logs / f"worker{n}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "widget_server.cli", "worker"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    for n, process in enumerate(processes):  # a stop signal before this is no clean shutdown
        deadline = time.monotonic() + 60
        while "mail worker started" not in (logs / f"worker{n}.log").read_text():
            assert process.poll() is None, (logs / f"worker{n}.log").read_text()
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.05)
    yield
    for process in processes:
        process.terminate()
    for n, process in enumerate(processes):
        assert process.wait(15) == 0, (logs / f"worker{n}.log").read_text()


# --- helpers -----------------------------------------------------------------------------------


def mail_site(
    redis_url: str, *, delay_s: float = 0.0, double_opt_in: bool = True, locale: str = "en"
) -> str:
    """A site whose cart email follows ``delay_s`` seconds after leaving."""
    site = "t" + secrets.token_hex(5)

    async def save() -> None:
        client = Redis.from_url(redis_url)
        try:
            await SiteRegistry(client, KEYS).save(new_site(site, origins=[ORIGIN], locale=locale))
            config = fast_config(delay_s, double_opt_in=double_opt_in)
            await MailFlowStore(client, KEYS).save(site, config)
        finally:
            await client.aclose()

    asyncio.run(save())
    return site


def profile(r: redis.Redis, site: str, visitor: str) -> dict[str, str]:
    return r.hgetall(KEYS.profile(site, visitor))  # type: ignore[return-value]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def mails_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["To"] == address]


def confirmations(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m for m in mails_to(sink, address) if "confirm" in str(m["Subject"]).lower()]


def cart_emails(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m for m in mails_to(sink, address) if str(m["Subject"]).startswith("Step 1")]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def link_in(message: EmailMessage) -> str:
    found = CONFIRM_LINK.search(text_of(message))
    assert found, text_of(message)
    return found.group(0)


def token_of(link: str) -> str:
    return link.split("?t=", 1)[1]


def dump(r: redis.Redis, key: str) -> str:
    """Everything stored under ``key``, as text."""
    kind = r.type(key)
    if kind == "hash":
        return " ".join(f"{k}={v}" for k, v in r.hgetall(key).items())  # type: ignore[union-attr]
    if kind == "set":
        return " ".join(r.smembers(key))  # type: ignore[arg-type]
    return str(r.dump(key))


def quiet(r: redis.Redis, site: str, visitor: str) -> bool:
    """No email job of the visitor is due now or held by a worker."""
    now = time.time()
    ids = set(r.smembers(KEYS.mail_visitor_jobs(site, visitor)))  # type: ignore[arg-type]
    for job_id in ids | {confirmation_job_id(site, visitor)}:
        due = r.zscore(KEYS.mail_due(), job_id)
        if (due is not None and due <= now) or r.zscore(KEYS.mail_leases(), job_id) is not None:
            return False
    return True


def identify(
    server: ServerProcess, site: str, visitor: str, cart: bool = True, **fields: Any
) -> None:
    """A visit: hello, identify (acked), optionally a cart line; then the visitor leaves."""
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        answer = c.event("identify", **fields)
        assert answer["type"] == "ack", answer
        if cart:
            c.event("cart_add", item={"id": "L1", "title": "Walnut lamp", "price": 49.0})
        c.send({"type": "ping"})  # answered only once everything the identify started is done
        c.recv_until("pong")


def beacon(
    server: ServerProcess, site: str, visitor: str, *messages: dict[str, Any], **headers: str
) -> dict[str, Any]:
    body = {"site": site, "visitor": visitor, "messages": list(messages)}
    answer = httpx.post(
        f"{server.url}/v1/events?site={site}",
        content=json.dumps(body),
        headers={"origin": ORIGIN, "content-type": "text/plain", **headers},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def sentinel(server: ServerProcess, redis_url: str, sink: SmtpSink, delay_s: float) -> None:
    """A visitor on a site without double opt-in leaves now with the same delay; once their
    email has arrived, the queue has come past everything due before it."""
    site = mail_site(redis_url, delay_s=delay_s, double_opt_in=False)
    address = f"sentinel-{new_visitor()}@example.com"
    identify(server, site, new_visitor(), email=address, consent=True)
    wait_for(lambda: cart_emails(sink, address), "the sentinel's cart email")


# --- the consent record ------------------------------------------------------------------------


def test_consent_record_keeps_source_wording_and_the_trusted_country_never_the_ip(
    optin_server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(optin_server.redis_url)
    visitor = new_visitor()
    headers = {"CF-IPCountry": "de", "X-Forwarded-For": "203.0.113.9"}
    with Client(optin_server.ws_url, additional_headers=headers) as c:
        c.hello(site, visitor)
        before = time.time()
        answer = c.event(
            "identify",
            email="ada@example.com",
            consent=True,
            source="widget",
            wording="2026-10-newsletter",
            country="FR",  # the client's word on its country counts for nothing
            confirm=True,
        )
        assert answer["type"] == "ack"
    record = profile(r, site, visitor)
    assert record["email_consent"] == "1"
    assert record["email_consent_source"] == "widget"
    assert record["email_consent_wording"] == "2026-10-newsletter"
    assert record["email_consent_country"] == "DE"
    assert float(record["email_consent_at"]) >= before - 1
    assert record["email_confirm_required"] == "0"  # the site has no double opt-in
    values = " ".join(dump(r, key) for key in r.scan_iter(f"ws:{{{site}:{visitor}}}*"))
    assert "203.0.113.9" not in values and "127.0.0.1" not in values
    assert not [field for field in record if "ip" in field.split("_")]

    other = new_visitor()  # the HTTP fallback records the same, from its own request's header
    answer = beacon(
        optin_server,
        site,
        other,
        {"id": "b1", "type": "event", "name": "identify", "email": "bo@example.com",
         "consent": True, "source": "datalayer"},
        **{"cf-ipcountry": "FR"},
    )  # fmt: skip
    assert answer["acks"] == ["b1"]
    record = profile(r, site, other)
    assert (record["email_consent_source"], record["email_consent_country"]) == ("datalayer", "FR")
    assert "email_consent_wording" not in record


@pytest.mark.parametrize("header", ["XX", "T1", "Germany", "d", ""])
def test_header_values_that_are_no_country_code_are_not_recorded(
    optin_server: ServerProcess, r: redis.Redis, header: str
) -> None:
    site, visitor = add_site(optin_server.redis_url), new_visitor()
    with Client(optin_server.ws_url, additional_headers={"CF-IPCountry": header}) as c:
        c.hello(site, visitor)
        assert c.event("identify", email="ada@example.com", consent=True)["type"] == "ack"
    record = profile(r, site, visitor)
    assert record["email_consent"] == "1"
    assert "email_consent_country" not in record


def test_country_is_not_recorded_unless_the_operator_names_the_header(
    server: ServerProcess, optin_server: ServerProcess, r: redis.Redis
) -> None:
    site, visitor = add_site(server.redis_url), new_visitor()
    with Client(server.ws_url, additional_headers={"CF-IPCountry": "DE"}) as c:  # default setup
        c.hello(site, visitor)
        assert c.event("identify", email="ada@example.com", consent=True)["type"] == "ack"
    assert "email_consent_country" not in profile(r, site, visitor)
    refused = new_visitor()  # where the header is trusted, it still needs a consent to record
    with Client(optin_server.ws_url, additional_headers={"CF-IPCountry": "DE"}) as c:
        c.hello(site, refused)
        assert c.event("identify", email="ada@example.com", consent=False)["type"] == "ack"
    record = profile(r, site, refused)
    assert record["email_consent"] == "0"
    assert "email_consent_country" not in record and "email_consent_at" not in record


def test_record_default_repeat_withdrawal_new_consent_and_new_address(
    server: ServerProcess, r: redis.Redis
) -> None:
    site, visitor = add_site(server.redis_url), new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        c.event("identify", email="ada@example.com", consent=True, wording="v1")
        first = profile(r, site, visitor)
        assert first["email_consent_source"] == "shop"  # the shop's page unless said otherwise
        c.event("identify", email="ADA@example.com", consent=True, wording="v2", source="widget")
        again = profile(r, site, visitor)
        for field in ("email_consent_at", "email_consent_source", "email_consent_wording"):
            assert again[field] == first[field]  # the same consent repeated: the first record
        c.event("identify", email="ada@example.com", consent=False, wording="v3")
        withdrawn = profile(r, site, visitor)
        assert withdrawn["email_consent"] == "0"
        assert float(withdrawn["email_consent_withdrawn_at"]) >= float(first["email_consent_at"])
        assert withdrawn["email_consent_wording"] == "v1"  # what was withdrawn stays on record
        c.event("identify", email="ada@example.com", consent=True, wording="v4")
        renewed = profile(r, site, visitor)
        assert renewed["email_consent_wording"] == "v4"
        assert "email_consent_withdrawn_at" not in renewed
        c.event("identify", email="grace@example.com", consent=False)
        moved = profile(r, site, visitor)
    assert moved["email"] == "grace@example.com"
    assert not [field for field in moved if field.startswith(("email_consent_", "email_confirm"))]


# --- hostile input -----------------------------------------------------------------------------

HOSTILE: list[dict[str, Any]] = [
    {"wording": "x" * 65},
    {"wording": ""},
    {"wording": "2026\nBcc: x@y.z"},
    {"wording": "v1\x00"},
    {"wording": "v1\u2028"},
    {"wording": "new letter"},
    {"wording": 7},
    {"source": "email"},
    {"source": "WIDGET"},
    {"source": None},
    {"source": ["widget"]},
]


def test_hostile_consent_fields_are_refused_and_record_nothing(
    server: ServerProcess, r: redis.Redis
) -> None:
    site, visitor = add_site(server.redis_url), new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        for fields in HOSTILE:
            answer = c.event("identify", email="ada@example.com", consent=True, **fields)
            assert (answer["type"], answer["code"]) == ("error", "invalid_field"), fields
        assert "email" not in profile(r, site, visitor)
        assert c.event("identify", email="ada@example.com", consent=True)["type"] == "ack"
    messages = [
        {"id": f"h{n}", "type": "event", "name": "identify", "email": "bo@example.com",
         "consent": True, **fields}
        for n, fields in enumerate(HOSTILE)
    ]  # fmt: skip
    good = {"id": "ok", "type": "event", "name": "identify", "email": "bo@example.com"}
    other = new_visitor()
    answer = beacon(server, site, other, *messages, good)
    assert answer["acks"] == ["ok"]
    assert [(e["id"], e["code"]) for e in answer["errors"]] == [
        (f"h{n}", "invalid_field") for n in range(len(HOSTILE))
    ]
    assert profile(r, site, other)["email_consent"] == "0"


def test_a_bad_country_header_setting_stops_the_server_with_its_name() -> None:
    assert settings_from_env({}).consent_country_header == ""
    header = settings_from_env({"WIDGET_CONSENT_COUNTRY_HEADER": "CF-IPCountry"})
    assert header.consent_country_header == "cf-ipcountry"
    for bad in ("CF IPCountry", "x-country:\r\nfoo", "ü-country", "a" * 65):
        with pytest.raises(ConfigurationError, match="WIDGET_CONSENT_COUNTRY_HEADER"):
            settings_from_env({"WIDGET_CONSENT_COUNTRY_HEADER": bad})


# --- double opt-in -----------------------------------------------------------------------------


def test_double_opt_in_from_identify_to_the_cart_email(
    optin_server: ServerProcess, sink: SmtpSink, workers: None, r: redis.Redis
) -> None:
    redis_url = optin_server.redis_url
    site, visitor = mail_site(redis_url), new_visitor()
    address = f"ada-{visitor}@example.com"
    # Two tabs identify at the same moment, then the visitor leaves with a cart.
    with Client(optin_server.ws_url) as one, Client(optin_server.ws_url) as two:
        session = one.hello(site, visitor)["session"]
        two.hello(site, visitor, session=session)
        ids = [tab.send({"type": "event", "name": "identify", "email": address, "consent": True})
               for tab in (one, two)]  # fmt: skip
        assert one.answer(ids[0])["type"] == two.answer(ids[1])["type"] == "ack"
        one.event("cart_add", item={"id": "L1", "title": "Walnut lamp", "price": 49.0})
    record = profile(r, site, visitor)
    assert (record["email_confirm_required"], record.get("email_confirmed_at")) == ("1", None)

    wait_for(lambda: confirmations(sink, address), "the confirmation email")
    sentinel(optin_server, redis_url, sink, 0.0)
    wait_for(lambda: quiet(r, site, visitor), "the visitor's jobs to be done")
    assert len(confirmations(sink, address)) == 1  # two tabs, two workers: one email
    assert cart_emails(sink, address) == []  # not confirmed yet: no abandonment email
    identify(optin_server, site, visitor, email=address, consent=True)  # back the same day
    wait_for(lambda: quiet(r, site, visitor), "the visitor's jobs to be done")
    assert len(confirmations(sink, address)) == 1  # at most one a day
    message = confirmations(sink, address)[0]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    link = link_in(message)
    assert link.replace("&", "&amp;") in html

    page = httpx.get(link)  # what a link scanner or a preview does
    assert page.status_code == 200
    assert '<form method="post"' in page.text and address in page.text
    assert "email_confirmed_at" not in profile(r, site, visitor)
    assert r.scard(KEYS.mail_visitor_jobs(site, visitor)) == 0

    done = httpx.post(link)
    assert done.status_code == 200 and "is confirmed" in done.text
    confirmed_at = profile(r, site, visitor)["email_confirmed_at"]
    wait_for(lambda: cart_emails(sink, address), "the cart email after confirming")
    assert httpx.post(link).status_code == 200  # idempotent: a second click changes nothing
    assert profile(r, site, visitor)["email_confirmed_at"] == confirmed_at

    # Later that day: the same consent again sends nothing; a new address starts over.
    identify(optin_server, site, visitor, cart=False, email=address, consent=True)
    assert profile(r, site, visitor)["email_confirmed_at"] == confirmed_at
    new_address = f"grace-{visitor}@example.com"
    identify(optin_server, site, visitor, cart=False, email=new_address, consent=True)
    assert "email_confirmed_at" not in profile(r, site, visitor)
    wait_for(lambda: confirmations(sink, new_address), "the new address's confirmation")
    stale = httpx.post(link)  # the old address's link no longer applies
    assert stale.status_code == 409 and "no longer applies" in stale.text
    assert "email_confirmed_at" not in profile(r, site, visitor)
    wait_for(lambda: quiet(r, site, visitor), "the visitor's jobs to be done")
    assert len(confirmations(sink, address)) == 1
    assert len(cart_emails(sink, address)) == 1


def test_tampered_expired_and_foreign_links_are_refused(
    optin_server: ServerProcess, sink: SmtpSink, workers: None, r: redis.Redis
) -> None:
    site, visitor = mail_site(optin_server.redis_url), new_visitor()
    address = f"eve-{visitor}@example.com"
    identify(optin_server, site, visitor, email=address, consent=True)
    message = wait_for(lambda: confirmations(sink, address), "the confirmation email")[0]
    link = link_in(message)
    body, mac = token_of(link).split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_body = (
        base64.urlsafe_b64encode(json.dumps({**payload, "m": "mallory@example.com"}).encode())
        .rstrip(b"=")
        .decode()
    )
    base = f"{optin_server.url}/v1/mail/confirm"
    unsubscribe = str(message["List-Unsubscribe"]).strip("<>")
    secret = load_secret_key(optin_server.data_dir)
    expired = LinkSigner(secret).sign("confirm", payload, expires=time.time() - 60)
    refused = {
        f"{base}?t={forged_body}.{mac}": 400,  # another address under the real signature
        f"{base}?t={body}.{mac[:-2]}AA": 400,  # a tampered signature
        f"{base}?t={token_of(unsubscribe)}": 400,  # a genuine token made for another link
        f"{base}?t=" + "a" * 9000 + ".b": 400,
        f"{base}?t=": 400,
        base: 400,
        f"{base}?t={expired}": 410,
    }
    for url, status in refused.items():
        for method in ("GET", "POST"):
            answer = httpx.request(method, url)
            assert answer.status_code == status, (method, url[:80])
            assert "<form" not in answer.text
            assert ("expired" if status == 410 else "invalid") in answer.text
    too_big = httpx.post(link, content=b"x" * 5000)
    assert too_big.status_code == 413
    assert "email_confirmed_at" not in profile(r, site, visitor)
    assert httpx.post(link).status_code == 200  # the genuine link still works
    assert profile(r, site, visitor)["email_confirmed_at"]


def test_withdrawing_consent_after_confirming_stops_the_emails(
    optin_server: ServerProcess, sink: SmtpSink, workers: None, r: redis.Redis
) -> None:
    redis_url = optin_server.redis_url
    # The cart email falls due 5 s after the confirmation: time for the withdrawal to land first.
    site, visitor = mail_site(redis_url, delay_s=5.0), new_visitor()
    address = f"wes-{visitor}@example.com"
    identify(optin_server, site, visitor, email=address, consent=True)
    link = link_in(wait_for(lambda: confirmations(sink, address), "the confirmation")[0])
    assert httpx.post(link).status_code == 200
    assert r.scard(KEYS.mail_visitor_jobs(site, visitor)) == 1  # the cart email, due soon
    withdrawal = {"id": "w1", "type": "event", "name": "identify", "email": address}
    assert beacon(optin_server, site, visitor, withdrawal)["acks"] == ["w1"]
    record = profile(r, site, visitor)
    assert record["email_consent"] == "0" and record["email_consent_withdrawn_at"]
    assert r.scard(KEYS.mail_visitor_jobs(site, visitor)) == 0
    sentinel(optin_server, redis_url, sink, 5.0)  # due after the withdrawn visitor's email
    wait_for(lambda: quiet(r, site, visitor), "the visitor's jobs to be done")
    assert cart_emails(sink, address) == []
    assert httpx.post(link).status_code == 409  # the withdrawn consent cannot be confirmed

    # Consenting again the same day needs a new confirmation, but no second email today.
    again = {**withdrawal, "id": "w2", "consent": True}
    assert beacon(optin_server, site, visitor, again)["acks"] == ["w2"]
    record = profile(r, site, visitor)
    assert record["email_consent"] == "1" and "email_confirmed_at" not in record
    assert not r.exists(KEYS.mail_job(confirmation_job_id(site, visitor)))
    assert len(confirmations(sink, address)) == 1


def test_confirming_an_unsubscribed_address_keeps_it_unsubscribed(
    optin_server: ServerProcess, sink: SmtpSink, workers: None, r: redis.Redis
) -> None:
    site, visitor = mail_site(optin_server.redis_url), new_visitor()
    address = f"uma-{visitor}@example.com"
    identify(optin_server, site, visitor, email=address, consent=True)
    message = wait_for(lambda: confirmations(sink, address), "the confirmation email")[0]
    unsubscribe = str(message["List-Unsubscribe"]).strip("<>")
    one_click = httpx.post(unsubscribe, content=b"List-Unsubscribe=One-Click")
    assert one_click.status_code == 200
    answer = httpx.post(link_in(message))
    assert answer.status_code == 200 and "stays unsubscribed" in answer.text
    assert profile(r, site, visitor)["email_confirmed_at"]
    assert r.hexists(KEYS.mail_suppressed(site), address)
    assert r.scard(KEYS.mail_visitor_jobs(site, visitor)) == 0  # nothing scheduled
    assert cart_emails(sink, address) == []


def test_pages_speak_the_sites_language(
    optin_server: ServerProcess, sink: SmtpSink, workers: None, r: redis.Redis
) -> None:
    site, visitor = mail_site(optin_server.redis_url, locale="de"), new_visitor()
    address = f"dora-{visitor}@example.com"
    identify(optin_server, site, visitor, email=address, consent=True)
    message = wait_for(lambda: confirmations(sink, address) or mails_to(sink, address), "mail")[0]
    assert "E-Mail-Adresse" in str(message["Subject"])
    assert "Der Link ist gültig bis" in text_of(message)
    assert "Ja, bestätigen" in httpx.get(link_in(message)).text


# --- the worker's guarantee ----------------------------------------------------------------------


def test_a_refused_confirmation_is_retried_and_arrives_once(redis_url: str) -> None:
    address = "rita@example.com"
    sink = SmtpSink(rcpt_replies={address: ["451 4.3.0 try again later"]})

    async def body(sc: Scenario) -> None:
        store = session_store(sc.ctx)
        visitor = new_visitor()
        consent = p.Consent(analytics=True, marketing=True)
        opened = await store.open(sc.site, visitor, now=time.time(), consent=consent)
        who = Shopper(sc.site, visitor, opened.session_id, store, opened.view)
        await who.send(p.RecordedIdentify, email=address, consent=True, confirm=True)
        scheduler = sc.ctx.scheduler
        now = time.time()
        assert await scheduler.confirmation_requested(sc.site, visitor, address, now=now) == (
            "scheduled"
        )
        again = await scheduler.confirmation_requested(sc.site, visitor, address, now=now)
        assert again == "already_sent"  # at most one a day, even before it went out
        job = sc.ctx.keys.mail_job(confirmation_job_id(sc.site, visitor))
        async with running_worker(sc.ctx), running_worker(sc.ctx):
            await wait_until(lambda: len(sc.sink.received) == 1, within=10)
            for _ in range(500):  # the job is dropped once the send is recorded
                if not await sc.ctx.redis.exists(job):
                    break
                await asyncio.sleep(0.02)
            assert not await sc.ctx.redis.exists(job)
        assert [m["To"] for m in sc.sink.messages()] == [address]
        assert (await sc.stats("@confirm")).get("sent") == 1
        async with sc.client() as client:
            link = link_in(sc.sink.messages()[0])
            assert (await client.post(link)).status_code == 200
        raw = await sc.ctx.redis.hget(sc.ctx.keys.profile(sc.site, visitor), "email_confirmed_at")
        assert raw

    scenario(redis_url, body, sink=sink)


# --- the widget --------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_widgets_email_overlay_records_its_source(
    server: ServerProcess, r: redis.Redis, tmp_path: Path
) -> None:
    from ..realtime.test_widget_browser import (
        CHROMIUM,
        CHROMIUM_ARGS,
        DESKTOP,
        StaticSite,
        Tab,
        deliver,
        offer,
        welcomed,
    )

    shop = StaticSite(tmp_path)
    site = add_site(server.redis_url, [shop.origin])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            tab = Tab.attach(browser.new_context(**DESKTOP).new_page())
            tab.page.goto(shop.page(server.url, site))
            welcomed(tab)
            visitor, _ = tab.ids()
            join = p.OfferCta(label="Join", url="")
            capture = offer("email_capture", headline="Join us", cta=join)
            deliver(server.redis_url, site, visitor, p.Offer(offer=capture))
            tab.page.locator("exit-widget input[type=email]").fill("ola@example.com")
            tab.page.locator("exit-widget input[type=checkbox]").check()
            tab.page.locator("exit-widget button[type=submit]").click()
            tab.wait(lambda: profile(r, site, visitor).get("email_consent_source"), "identify")
            assert profile(r, site, visitor)["email_consent_source"] == "widget"
            tab.page.evaluate(
                'exitwidget.push(["identify", {email: "ola@shop.example", consent: true}])'
            )
            tab.wait(
                lambda: profile(r, site, visitor).get("email") == "ola@shop.example", "identify"
            )
            assert profile(r, site, visitor)["email_consent_source"] == "shop"
            assert tab.page_errors == []
            browser.close()
    finally:
        shop.close()
