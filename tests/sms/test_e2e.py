"""SMS through the whole product: the real server and `widget-server worker` processes, a
local server speaking the Twilio Messages API as the provider. A visitor confirms their phone
with the code texted to them, leaves with a cart, gets the flow's SMS; the provider posts their
STOP, after which no SMS goes out, and their START, after which SMS go out again."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from widget_server.mail.flows import Flow, FlowStep, MailConfig
from widget_server.mail.sms_steps import new_link_token
from widget_server.sms.phone import phone_digest
from widget_server.store.keys import Keys

from ..mail_support import UNLIMITED, IsolatedShop, isolated_shop
from ..sms_support import FakeMessagesApi, SentSms
from ..support import (
    Client,
    ServerProcess,
    add_site,
    message_campaign,
    new_visitor,
    running_server,
    save_campaigns,
)

PHONE = "+491701234567"


@pytest.fixture
def api() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi() as fake:
        yield fake


@pytest.fixture
def shop(redis_url: str, tmp_path: Path, api: FakeMessagesApi) -> Iterator[IsolatedShop]:
    with isolated_shop(redis_url, tmp_path, extra_env=api.env()) as isolated:
        yield isolated


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sms_round_trip_with_stop_and_start(shop: IsolatedShop, api: FakeMessagesApi) -> None:
    server, keys = shop.server, shop.keys
    site = shop.add_site()
    config = MailConfig(
        flows=[
            Flow(
                name="cart",
                kind="cart",
                daily_cap=20,
                steps=[
                    FlowStep(delay_minutes=0, channel="sms", sms_text={"en": "Cart: {link}"}),
                    FlowStep(delay_minutes=60, channel="sms", sms_text={"en": "Still? {link}"}),
                ],
            )
        ],
        budget=UNLIMITED,
    )
    store = redis.Redis.from_url(server.redis_url)
    store.set(keys.mail_flows(site), config.model_dump_json())
    visitor = new_visitor()
    later_job = f"{site}:{visitor}:cart:1"

    def flow_sms() -> list[SentSms]:
        return [m for m in api.to(PHONE) if not re.search(r"\d{6}", m.body)]

    def leave() -> None:
        with Client(server.ws_url) as c:
            c.hello(site, visitor)
            c.event("cart_add", item={"id": "L1", "title": "Lamp", "price": 49.0})
        wait_for(lambda: store.exists(keys.mail_job(later_job)))

    def fast_forward() -> None:  # the hour until the second step passes
        store.zadd(keys.mail_due(), {later_job: time.time()}, xx=True)

    def stats() -> dict[str, int]:
        raw = store.hgetall(keys.mail_stats(site, "cart"))
        return {k.decode(): int(v) for k, v in raw.items()}

    with Client(server.ws_url) as c:  # the visitor is on the shop's page
        c.hello(site, visitor)
        asked = httpx.post(
            f"{server.url}/v1/sms/optin?site={site}",
            json={"visitor": visitor, "phone": "+49 170 1234567", "consent": True},
            headers={"origin": "https://shop.test"},
        )
        assert asked.json() == {"status": "code_sent", "phone": PHONE}, asked.text
        wait_for(lambda: api.to(PHONE))
        code = re.findall(r"\d{6}", api.to(PHONE)[0].body)[0]
        done = httpx.post(
            f"{server.url}/v1/sms/confirm?site={site}", json={"visitor": visitor, "code": code}
        )
        assert done.json() == {"status": "confirmed", "phone": PHONE}, done.text
        c.event("cart_add", item={"id": "L1", "title": "Lamp", "price": 49.0})
    wait_for(flow_sms)  # the first step, sent by the worker
    [first] = flow_sms()
    assert first.body.startswith(f"Cart: {server.url}/v1/sms/l/")
    assert api.status(first, "delivered").status_code == 204
    wait_for(lambda: stats().get("sms_delivered:0") == 1)
    assert stats()["sms_sent:0"] == 1

    inbound = f"{server.url}/v1/sms/inbound?site={site}"
    forged = api.signed_post(inbound, {"From": PHONE, "Body": "STOP"}, token="wrong")
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "bad_signature"
    assert store.exists(keys.mail_job(later_job))  # nothing changed

    assert api.inbound(inbound, PHONE, "Stop").status_code == 200
    assert not store.exists(keys.mail_job(later_job))  # the pending SMS step is cancelled
    leave()  # leaving again schedules it again; when it falls due, it is skipped
    fast_forward()
    wait_for(lambda: stats().get("skipped:sms_suppressed") == 1)
    assert len(flow_sms()) == 1

    assert api.inbound(inbound, PHONE, " START ").status_code == 200
    leave()
    fast_forward()
    wait_for(lambda: len(flow_sms()) == 2)
    assert flow_sms()[1].body.startswith("Still? ")
    assert shop.sink.received == []  # SMS only: no email address, no email

    # Erasing the visitor takes them off their number's list.
    index = keys.sms_phone_visitors(site, phone_digest(PHONE))
    assert store.smembers(index) == {visitor.encode()}
    erased = httpx.post(
        f"{server.url}/v1/visitors/erase?site={site}",
        json={"visitor": visitor},
        headers={"authorization": f"Bearer {shop.site_secret(site)}"},
    )
    assert erased.status_code == 200, erased.text
    assert store.smembers(index) == set()
    assert not store.exists(keys.profile(site, visitor))


def test_erasure_deletes_the_visitor_s_sms_links_and_no_one_else_s(
    shop: IsolatedShop, api: FakeMessagesApi
) -> None:
    erased_links_answer_as_unknown(shop, api, redis.Redis.from_url(shop.server.redis_url))


def erased_links_answer_as_unknown(
    shop: IsolatedShop, api: FakeMessagesApi, store: redis.Redis | RedisCluster
) -> None:
    """Two visitors get two SMS with a link each; erasing one deletes their links (each on a
    slot of its own) and their listing, and the links then answer like ones never made; the
    other's links still work. ``store`` reads the shop's Redis (a cluster client on a cluster)."""
    server, keys = shop.server, shop.keys
    site = shop.add_site()
    texts = ("Cart: {link}", "Again: {link}")
    steps = [FlowStep(delay_minutes=0, channel="sms", sms_text={"en": t}) for t in texts]
    config = MailConfig(flows=[Flow(name="cart", kind="cart", steps=steps)], budget=UNLIMITED)
    store.set(keys.mail_flows(site), config.model_dump_json())

    def texted_links(phone: str) -> tuple[str, list[str]]:
        """A visitor who confirms ``phone`` and leaves a cart, and the links their SMS bring."""
        visitor = new_visitor()
        with Client(server.ws_url) as c:
            c.hello(site, visitor)
            asked = httpx.post(
                f"{server.url}/v1/sms/optin?site={site}",
                json={"visitor": visitor, "phone": phone, "consent": True},
                headers={"origin": "https://shop.test"},
            )
            assert asked.json()["status"] == "code_sent", asked.text
            code = re.findall(r"\d{6}", api.to(phone)[0].body)[0]
            done = httpx.post(
                f"{server.url}/v1/sms/confirm?site={site}", json={"visitor": visitor, "code": code}
            )
            assert done.json()["status"] == "confirmed", done.text
            c.event("cart_add", item={"id": "L1", "title": "Lamp", "price": 49.0})
        wait_for(lambda: len(api.to(phone)) == 3)  # the code, then the flow's two SMS
        links = sorted(m.body.split(": ", 1)[1] for m in api.to(phone)[1:])
        return visitor, links

    erased_visitor, erased_links = texted_links(PHONE)
    kept_visitor, kept_links = texted_links("+491701234568")
    tokens = {link.rsplit("/", 1)[1] for link in erased_links}
    listed = keys.sms_links(site, erased_visitor)
    assert {t.decode() for t in store.smembers(listed)} == tokens  # type: ignore[union-attr]
    assert 0 < store.ttl(listed) <= 90 * 86400
    assert httpx.get(erased_links[0]).status_code == 302  # it works until the erasure

    erased = httpx.post(
        f"{server.url}/v1/visitors/erase?site={site}",
        json={"visitor": erased_visitor},
        headers={"authorization": f"Bearer {shop.site_secret(site)}"},
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["visitors"][0]["sms_links"] == 2
    assert not any(store.exists(keys.sms_link(token)) for token in tokens)
    assert not store.exists(listed)
    # The erased visitor's links answer like a link the server never made.
    never_made = new_link_token(server.extra_env["WIDGET_SECRET_KEY"])
    unknown = httpx.get(f"{server.url}/v1/sms/l/{never_made}")
    assert unknown.status_code == 410
    for link in erased_links:
        gone = httpx.get(link)
        assert (gone.status_code, gone.text) == (unknown.status_code, unknown.text)
    # The other visitor's links still lead to their cart.
    for link in kept_links:
        kept = httpx.get(link)
        assert kept.status_code == 302 and "L1" in kept.headers["location"]
    assert len(store.smembers(keys.sms_links(site, kept_visitor))) == 2


def test_phone_capture_over_the_websocket(
    redis_url: str, tmp_path: Path, api: FakeMessagesApi
) -> None:
    keys = Keys(prefix="p" + secrets.token_hex(4))
    with running_server(
        redis_url, tmp_path, WIDGET_REDIS_PREFIX=keys.prefix, **api.env()
    ) as server:
        site = add_site(redis_url, keys=keys)
        visitor = new_visitor()
        with Client(server.ws_url) as c:
            c.hello(site, visitor)
            bad = c.send({"type": "phone_capture", "consent": True})
            refused = c.answer(bad)
            assert (refused["type"], refused["code"]) == ("error", "invalid_field")
            assert "phone" in refused["message"]
            c.send({"type": "phone_capture", "phone": "not a number", "consent": True})
            garbage = c.recv_until("phone_result")
            assert (garbage["status"], garbage["error"]) == ("error", "invalid_phone")
            asked = c.send({"type": "phone_capture", "phone": "+49 170 1234567", "consent": True})
            result = c.recv_until("phone_result")
            assert result == {"type": "phone_result", "id": asked, "status": "code_sent",
                              "phone": PHONE}  # fmt: skip
            code = re.findall(r"\d{6}", api.to(PHONE)[0].body)[0]
            c.send({"type": "phone_confirm", "code": "12"})
            assert c.recv_until("phone_result")["error"] == "invalid_code"
            c.send({"type": "phone_confirm", "code": code})
            assert c.recv_until("phone_result")["status"] == "confirmed"
        profile = redis.Redis.from_url(redis_url).hgetall(keys.profile(site, visitor))
        assert profile[b"phone"] == PHONE.encode() and profile[b"sms_consent"] == b"1"
        assert profile[b"sms_consent_source"] == b"widget" and profile[b"sms_confirmed_at"]


def test_an_sms_capture_offer_carries_its_form_s_words(server: ServerProcess) -> None:
    site = add_site(server.redis_url)
    campaign = message_campaign("texts")
    campaign["variants"] = [
        {
            "key": "a",
            "offer": {"kind": "sms_capture", "headline": "Get our texts"},
            "discount": {"type": "percent", "amount": 10, "code_strategy": "generated",
                         "valid_minutes": 30},
        }
    ]  # fmt: skip
    save_campaigns(server.redis_url, site, [campaign])
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor(), lang="de")
        offered = c.signal_answer({"type": "signal", "name": "exit_intent", "kind": "top_edge"})
    assert offered is not None and offered["kind"] == "sms_capture"
    assert offered["phone"] == {
        "submit": "Code per SMS senden", "code": "Code aus der SMS eingeben",
        "confirm": "Bestätigen",
    }  # fmt: skip
    assert offered["consent_label"].startswith("Schickt mir Angebote per SMS")
    assert "code" not in offered  # an SMS capture gives no code
