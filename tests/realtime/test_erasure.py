"""Erasing a visitor on a privacy request: through the shop API (``POST /v1/visitors/erase``) and
from the admin's visitor page, against a real server process, real Valkey and real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import GeneratorType
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosedOK

from widget_server.mail.jobs import MailScheduler
from widget_server.offers.campaign_store import CampaignStore
from widget_server.store.keys import Keys

from ..admin.test_admin import AdminClient, signed_in
from ..support import (
    NO_SITE_LIMITS,
    Client,
    ServerProcess,
    add_site,
    discount_campaign,
    new_visitor,
    save_campaigns,
    sockets_settled,
)

KEYS = Keys()
EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}


# --- helpers ------------------------------------------------------------------------------------


def offer_after_exit(c: Client) -> dict[str, Any] | None:
    """Send an exit-intent signal; the offer it produced, or None."""
    return c.signal_answer(EXIT)


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def run(coro_factory: Any, redis_url: str) -> Any:
    """Run ``coro_factory(client)`` with a fresh async Redis client (the product's own stores)."""

    async def main() -> Any:
        client = Redis.from_url(redis_url)
        try:
            return await coro_factory(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def tagged_keys(r: redis.Redis, site: str, visitor: str) -> list[str]:
    """Every key under the visitor's hash tag."""
    pattern = KEYS.tag(site, visitor).replace("{", "[{]").replace("}", "[}]") + ":*"
    return sorted(r.scan_iter(pattern, count=1000))


def lasting_keys(r: redis.Redis, site: str, visitor: str) -> list[str]:
    """The visitor's keys but the two that change by themselves: the marker of the session opened
    last (it expires 5 s after it is written) and the live-connection list (the server removes a
    closed socket from it a moment after the close). What a check that nothing was erased
    compares, however slow the run."""
    moving = {KEYS.opening(site, visitor), KEYS.connections(site, visitor)}
    return [key for key in tagged_keys(r, site, visitor) if key not in moving]


def stats(r: redis.Redis, site: str, campaign: str) -> dict[str, str]:
    pattern = KEYS.campaign_stats(site, campaign, "*").replace("{", "[{]").replace("}", "[}]")
    found: dict[str, str] = {}
    for key in r.scan_iter(pattern):
        found.update({f"{key}/{k}": v for k, v in r.hgetall(key).items()})
    return found


def secret_of(r: redis.Redis, site: str) -> str:
    return str(json.loads(r.get(KEYS.site(site)) or "{}")["secret"])


def erase(
    server: ServerProcess, site: str, body: Any, secret: str | None, **kw: Any
) -> httpx.Response:
    """POST /v1/visitors/erase; ``body`` as JSON unless it is bytes already."""
    content = body if isinstance(body, bytes | GeneratorType) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return httpx.post(
        f"{server.url}/v1/visitors/erase",
        params={"site": site},
        content=content,
        headers=headers,
        timeout=15,
        **kw,
    )


@dataclass
class Known:
    """A visitor the server knows a lot about."""

    site: str
    visitor: str
    sessions: list[str] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)  # campaign -> code held


def visit(server: ServerProcess, known: Known, email: str, *, exits: int, cart: bool) -> None:
    """One session: identify, show exit intent ``exits`` times, maybe fill the cart, leave."""
    with Client(server.ws_url) as c:
        known.sessions.append(c.hello(known.site, known.visitor, device="desktop")["session"])
        assert c.event("identify", email=email, consent=True)["type"] == "ack"
        for _ in range(exits):
            offer = offer_after_exit(c)
            assert offer is not None and offer.get("code")
            known.codes[offer["campaign"]] = offer["code"]
        if cart:
            item = {"id": "L1", "title": "Walnut lamp", "price": 49.0}
            assert c.event("cart_add", item=item)["type"] == "ack"


def jobs_of(r: redis.Redis, site: str, visitor: str) -> set[str]:
    return set(r.smembers(KEYS.mail_visitor_jobs(site, visitor)))


def known_visitor(server: ServerProcess, r: redis.Redis, site: str) -> Known:
    """Two sessions, exposures to two campaigns (one archived since), decisions, two email
    addresses (the first one unsubscribed), pending emails and a record of a sent one."""
    known = Known(site, new_visitor())
    visit(server, known, "old@example.test", exits=2, cart=False)
    assert set(known.codes) == {"old", "ten"}
    run(lambda c: MailScheduler(c, KEYS).suppress(site, "old@example.test", "unsubscribed"),
        server.redis_url)  # fmt: skip
    visit(server, known, "New@Example.test", exits=0, cart=True)
    assert wait_for(lambda: jobs_of(r, site, known.visitor)), "no email was scheduled"
    r.hset(KEYS.mail_sent(site, known.visitor), "browse:0", f"token|{time.time()}")
    run(lambda c: CampaignStore(c, KEYS).set_status(site, "old", "ended", author="tests"),
        server.redis_url)  # fmt: skip
    return known


def new_site_with_campaigns(redis_url: str) -> str:
    # Two discounts in one visit: more than the site-wide default allows.
    site = add_site(redis_url, frequency=NO_SITE_LIMITS)
    save_campaigns(redis_url, site, [
        discount_campaign("old", priority=200),
        discount_campaign("ten", priority=100),
    ])  # fmt: skip
    return site


def trace_page(admin: AdminClient, site: str, query: str) -> httpx.Response:
    return admin.get(f"/admin/sites/{site}/visitors", params={"q": query})


@pytest.fixture(scope="module")
def owner(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = signed_in(server, redis_url, "owner")
    yield client
    client.close()


# --- the shop API ---------------------------------------------------------------------------------


def test_erasing_by_email_removes_everything_but_counts_and_suppressions(
    server: ServerProcess, r: redis.Redis, owner: AdminClient
) -> None:
    site = new_site_with_campaigns(server.redis_url)
    known = known_visitor(server, r, site)
    visitor = known.visitor
    # A second browser of the same person (same address, its own visitor id, a pending email),
    # and a stranger whose data must survive.
    twin = Known(site, new_visitor())
    visit(server, twin, "new@example.test", exits=0, cart=True)
    assert wait_for(lambda: jobs_of(r, site, twin.visitor))
    stranger = Known(site, new_visitor())
    visit(server, stranger, "stranger@example.test", exits=1, cart=True)
    assert wait_for(lambda: jobs_of(r, site, stranger.visitor))
    stranger_keys = lasting_keys(r, site, stranger.visitor)

    # What the store and the admin show before.
    page = trace_page(owner, site, "new@example.test")
    assert page.status_code == 200 and twin.visitor in page.text  # the index names the last one
    page = trace_page(owner, site, visitor)
    assert page.status_code == 200 and "Erase this visitor" in page.text
    assert all(f"session-{sid}" in page.text for sid in known.sessions)
    assert page.text.count('class="decision"') == 2
    trace_keys = [KEYS.trace(site, visitor, sid) for sid in known.sessions]
    assert r.exists(trace_keys[0]) and r.exists(KEYS.session_owner(site, known.sessions[0]))
    assert r.hget(KEYS.email_index(site), "old@example.test") == visitor
    assert r.exists(KEYS.campaign_visitor(site, "old", visitor))
    assert r.exists(KEYS.campaign_visitor(site, "ten", visitor))
    jobs = jobs_of(r, site, visitor) | jobs_of(r, site, twin.visitor)
    feed = [json.loads(e) for e in r.lrange(KEYS.decisions(site), 0, -1)]
    assert sum(1 for e in feed if e["visitor"] == visitor) == 2
    counts_before = {c: stats(r, site, c) for c in ("old", "ten")}
    assert counts_before["old"] and counts_before["ten"]
    impressions = r.get(KEYS.campaign_impressions(site, "ten"))
    suppressed = r.hgetall(KEYS.mail_suppressed(site))
    assert "old@example.test" in suppressed

    answer = erase(server, site, {"email": "NEW@example.TEST"}, secret_of(r, site))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [v["visitor"] for v in body["visitors"]] == sorted([visitor, twin.visitor])
    mine = next(v for v in body["visitors"] if v["visitor"] == visitor)
    assert mine["sessions"] == 2 and mine["traces"] == 1 and mine["feed_entries"] == 2
    assert mine["emails"] == 1  # old@ still pointed at the visitor; new@ was the twin's
    assert mine["campaign_states"] == 2 and mine["codes_unlinked"] == 2
    assert mine["email_jobs"] == 3 and mine["sent_marks"] == 1 and mine["visitor_keys"] > 0
    assert body["deleted"]["email_jobs"] == 6 and body["deleted"]["emails"] == 2

    # Gone: every key of both visitors, their campaign states, traces, emails and index entries.
    for who in (visitor, twin.visitor):
        assert tagged_keys(r, site, who) == []
        assert not r.exists(KEYS.campaign_visitor(site, "old", who))
        assert not r.exists(KEYS.campaign_visitor(site, "ten", who))
        assert not r.exists(KEYS.mail_sent(site, who), KEYS.mail_visitor_jobs(site, who))
    for sid in known.sessions:
        assert not r.exists(KEYS.session_owner(site, sid))
    assert not any(r.exists(KEYS.mail_job(job)) for job in jobs)
    assert not any(r.zscore(KEYS.mail_due(), job) for job in jobs)
    index = r.hgetall(KEYS.email_index(site))
    assert "old@example.test" not in index and "new@example.test" not in index
    feed = [json.loads(e) for e in r.lrange(KEYS.decisions(site), 0, -1)]
    assert {e["visitor"] for e in feed} == {stranger.visitor}
    # Codes stay valid for the shop, but no longer name the visitor.
    for campaign, code in known.codes.items():
        record = json.loads(r.hget(KEYS.issued_codes(site, campaign), code) or "{}")
        assert record["variant"] == "a" and "visitor" not in record and "session" not in record
    check = httpx.get(f"{server.url}/v1/codes/{known.codes['ten']}", params={"site": site},
                      headers={"Authorization": f"Bearer {secret_of(r, site)}"})  # fmt: skip
    assert check.json()["valid"] is True

    # Kept: the counts, the suppression list, the stranger.
    assert {c: stats(r, site, c) for c in ("old", "ten")} == counts_before
    assert r.get(KEYS.campaign_impressions(site, "ten")) == impressions
    assert r.hgetall(KEYS.mail_suppressed(site)) == suppressed
    assert lasting_keys(r, site, stranger.visitor) == stranger_keys
    assert [r.exists(KEYS.campaign_visitor(site, c, stranger.visitor)) for c in stranger.codes] == [
        1
    ]
    assert jobs_of(r, site, stranger.visitor)
    assert r.hget(KEYS.email_index(site), "stranger@example.test") == stranger.visitor

    # The admin finds nothing any more, by any of the ways in.
    for query in ("new@example.test", "old@example.test", visitor, twin.visitor,
                  *known.sessions):  # fmt: skip
        page = trace_page(owner, site, query)
        assert page.status_code == 404 and "No visitor found" in page.text, query
    assert trace_page(owner, site, stranger.visitor).status_code == 200

    # The shop's request is in the audit log, by visitor id only.
    entries = [json.loads(e) for e in r.lrange(KEYS.admin_audit(), 0, 200)]
    erased = [e for e in entries if e["action"] == "visitor.erase" and e["site"] == site]
    assert {e["target"] for e in erased} == {visitor, twin.visitor}
    assert all(e["actor"] == "shop backend (API)" for e in erased)
    assert "example.test" not in json.dumps(erased)

    # Asking again finds no one and deletes nothing.
    again = erase(server, site, {"email": "new@example.test"}, secret_of(r, site))
    assert again.status_code == 200 and again.json()["visitors"] == []
    assert set(again.json()["deleted"].values()) == {0}


def test_erasure_takes_the_visitor_out_of_who_viewed_what(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)
    visitor, stranger = new_visitor(), new_visitor()
    for who in (visitor, stranger):
        with Client(server.ws_url) as c:
            c.hello(site, who)
            product = {"id": "MUG", "title": "Blue mug", "category": "Kitchen"}
            assert c.event("product_view", product=product)["type"] == "ack"
    mug = KEYS.interest(site, "MUG")
    assert wait_for(lambda: r.zscore(mug, visitor) and r.zscore(mug, stranger))
    assert r.exists(KEYS.interest_of(site, visitor))

    answer = erase(server, site, {"visitor": visitor}, secret_of(r, site))

    assert answer.status_code == 200, answer.text
    assert answer.json()["visitors"][0]["interest"] == 2  # the product and its category
    assert r.zscore(mug, visitor) is None and r.zscore(mug, stranger) is not None
    assert not r.exists(KEYS.interest_of(site, visitor))


def test_a_connected_visitor_has_offers_withdrawn_and_the_socket_closed(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = new_site_with_campaigns(server.redis_url)
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        session = c.hello(site, visitor)["session"]
        c.event("identify", email="open-tab@example.test", consent=True)
        c.event("cart_add", item={"id": "sku-1", "title": "Mug", "price": 12.0})
        offer = offer_after_exit(c)
        assert offer is not None
        answer = erase(server, site, {"visitor": visitor}, secret_of(r, site))
        assert answer.status_code == 200
        counts = answer.json()["visitors"][0]
        assert counts["live_sockets"] == 1 and counts["campaign_states"] == 1
        assert c.recv_until("withdraw") == {"type": "withdraw", "offer": "*"}
        with pytest.raises(ConnectionClosedOK):
            c.recv(timeout=5)
    sockets_settled(server)  # the server's side of the close has run
    # Closing scheduled no email from what the connection had in memory, and wrote nothing.
    assert not r.exists(KEYS.mail_visitor_jobs(site, visitor))
    assert not r.exists(KEYS.session(site, visitor, session), KEYS.profile(site, visitor))
    assert not r.exists(KEYS.campaign_visitor(site, "old", visitor))


def test_bad_erase_requests_are_refused_and_change_nothing(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = new_site_with_campaigns(server.redis_url)
    known = Known(site, new_visitor())
    visit(server, known, "keep@example.test", exits=1, cart=False)
    before = lasting_keys(r, site, known.visitor)
    state = r.hgetall(KEYS.campaign_visitor(site, "old", known.visitor))
    assert before and state
    secret = secret_of(r, site)
    good = {"visitor": known.visitor}

    def refused(status: int, code: str, response: httpx.Response) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code

    refused(401, "bad_token", erase(server, site, good, "wrong-secret"))
    refused(401, "bad_token", erase(server, site, good, None))
    refused(401, "bad_token", erase(server, site, good, None, headers={"Authorization": "Bearer"}))
    basic = {"Authorization": f"Basic {secret}"}
    refused(401, "bad_token", erase(server, site, good, None, headers=basic))
    refused(401, "bad_token", erase(server, site, good, secret + "x"))
    refused(404, "unknown_site", erase(server, "nosuch-site", good, secret))
    refused(404, "unknown_site", erase(server, "", good, secret))
    other_site = new_site_with_campaigns(server.redis_url)  # its own secret opens only itself
    refused(401, "bad_token", erase(server, other_site, good, secret))
    refused(400, "bad_json", erase(server, site, b'{"visitor": ', secret))
    refused(400, "bad_json", erase(server, site, b"\xff\xfe", secret))
    refused(400, "bad_json", erase(server, site, b"", secret))
    refused(400, "invalid_field", erase(server, site, [known.visitor], secret))
    refused(400, "invalid_field", erase(server, site, {**good, "reason": "gdpr"}, secret))
    refused(400, "invalid_field", erase(server, site, {**good, "email": "keep@example.test"},
                                        secret))  # fmt: skip
    refused(400, "invalid_field", erase(server, site, {}, secret))
    refused(400, "invalid_field", erase(server, site, {"visitor": None}, secret))
    refused(400, "invalid_field", erase(server, site, {"visitor": 12345678}, secret))
    for hostile in ("*", known.visitor[:5] + "*", "short", "a" * 65, "../" + known.visitor,
                    known.visitor + "}", "x y z w v u"):  # fmt: skip
        refused(400, "invalid_field", erase(server, site, {"visitor": hostile}, secret))
    for address in ("keep", "keep@", "<keep@example.test>", "a@b@example.test", "x" * 251 + "@a.b"):
        refused(400, "invalid_field", erase(server, site, {"email": address}, secret))
    big = json.dumps({"visitor": known.visitor, "pad": "x" * 5000}).encode()
    refused(413, "frame_too_large", erase(server, site, big, secret))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"visitor": "' + known.visitor.encode() + b'", "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    refused(413, "frame_too_large", erase(server, site, chunks(), secret))
    wrong_method = httpx.get(f"{server.url}/v1/visitors/erase", params={"site": site},
                             headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert wrong_method.status_code == 405

    assert lasting_keys(r, site, known.visitor) == before
    assert r.hgetall(KEYS.campaign_visitor(site, "old", known.visitor)) == state
    assert r.hget(KEYS.email_index(site), "keep@example.test") == known.visitor

    # An unknown visitor id is not an error: there is nothing to erase.
    nobody = erase(server, site, {"visitor": new_visitor()}, secret)
    assert nobody.status_code == 200 and set(nobody.json()["deleted"].values()) == {0}
    assert lasting_keys(r, site, known.visitor) == before


# --- the admin ----------------------------------------------------------------------------------


def test_only_owners_erase_from_the_admin_after_confirming(
    server: ServerProcess, r: redis.Redis, owner: AdminClient
) -> None:
    site = new_site_with_campaigns(server.redis_url)
    known = Known(site, new_visitor())
    visit(server, known, "ada@example.test", exits=1, cart=False)
    before = lasting_keys(r, site, known.visitor)
    path = f"/admin/sites/{site}/visitors/erase"
    data = {"visitor": known.visitor, "confirm": "yes"}

    def intact() -> bool:
        return (
            lasting_keys(r, site, known.visitor) == before
            and r.exists(KEYS.campaign_visitor(site, "old", known.visitor)) == 1
            and r.hget(KEYS.email_index(site), "ada@example.test") == known.visitor
        )

    for role in ("editor", "viewer"):
        other = signed_in(server, server.redis_url, role)
        try:
            page = trace_page(other, site, "ada@example.test")
            assert page.status_code == 200 and known.visitor in page.text
            assert "Erase this visitor" not in page.text and path not in page.text
            assert other.post(path, data).status_code == 403, role
            assert other.post(path, {"visitor": known.visitor}).status_code == 403, role
        finally:
            other.close()
    assert intact()

    # CSRF: no token, a wrong token, another site's page posting.
    assert owner.http.post(path, data=data).status_code == 403
    assert owner.http.post(path, data={**data, "csrf": "forged"}).status_code == 403
    assert owner.post(path, data, headers={"Origin": "https://evil.test"}).status_code == 403
    assert owner.post(path, {"visitor": "bad id!", "confirm": "yes"}).status_code == 400
    assert owner.post("/admin/sites/nosuch/visitors/erase", data).status_code == 404
    assert intact()

    # The button leads to a confirmation that changes nothing yet.
    page = trace_page(owner, site, "ada@example.test")
    assert "Erase this visitor" in page.text and f'action="{path}"' in page.text
    confirm = owner.post(path, {"visitor": known.visitor})
    assert confirm.status_code == 200 and "Yes, erase this visitor" in confirm.text
    assert 'name="confirm" value="yes"' in confirm.text
    assert intact()

    started = time.time()
    done = owner.post(path, data)
    finished = time.time()
    assert done.status_code == 200 and "erased" in done.text
    assert 'data-count="traces">1<' in done.text and 'data-count="campaign_states">1<' in done.text
    assert 'data-count="emails">1<' in done.text and 'data-count="sessions">1<' in done.text
    assert tagged_keys(r, site, known.visitor) == []
    assert not r.exists(KEYS.campaign_visitor(site, "old", known.visitor))
    for query in ("ada@example.test", known.visitor, known.sessions[0]):
        assert trace_page(owner, site, query).status_code == 404, query

    entry = next(
        json.loads(e) for e in r.lrange(KEYS.admin_audit(), 0, 200)
        if json.loads(e)["action"] == "visitor.erase" and json.loads(e)["site"] == site
    )  # fmt: skip
    assert entry["target"] == known.visitor and entry["actor"].startswith("owner-")
    assert entry["after"]["traces"] == 1 and started <= entry["at"] <= finished
    assert "ada@example.test" not in json.dumps(entry)
    assert known.visitor in owner.get("/admin/audit").text
