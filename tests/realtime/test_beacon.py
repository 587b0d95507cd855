"""POST /v1/events: the batch fallback for sendBeacon and blocked WebSockets."""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from widget_server.store.keys import Keys

from ..support import Client, ServerProcess, new_visitor, save_campaigns

KEYS = Keys()

ORIGIN = "https://shop.test"


def post(
    server: ServerProcess,
    body: object,
    *,
    site: str = "",
    origin: str | None = ORIGIN,
    raw: bytes | None = None,
) -> httpx.Response:
    headers = {"content-type": "text/plain;charset=UTF-8"}
    if origin:
        headers["origin"] = origin
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/events?site={site}", content=content, headers=headers)


def test_batch_resumes_the_session_and_applies_once(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        sid = c.hello(site, visitor)["session"]
    batch = {
        "site": site,
        "visitor": visitor,
        "session": sid,
        "messages": [
            {"id": "b1", "type": "event", "name": "cart_add", "item": {"id": "A", "price": 4}},
            {"id": "b2", "type": "signal", "name": "exit_intent", "kind": "tab_switch"},
            {"id": "b3", "type": "event", "name": "cart_add", "item": {"id": 12}},
            {"nope": True},
        ],
    }
    response = post(server, batch, site=site)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    body = response.json()
    assert body["session"] == sid
    assert body["acks"] == ["b1", "b2"]
    assert [e["code"] for e in body["errors"]] == ["invalid_field", "missing_id"]
    assert post(server, batch, site=site).json()["acks"] == ["b1", "b2"]  # replay
    state = r.hgetall(Keys().session(site, visitor, sid))
    assert state["cart_items"] == "1" and state["last_signal_kind"] == "tab_switch"


def test_batch_without_a_session_starts_one(server: ServerProcess, site: str) -> None:
    body = {"site": site, "visitor": new_visitor(), "messages": [{"id": "1", "type": "ping"}]}
    result = post(server, body, site=site).json()
    assert result["session"] and result["acks"] == ["1"]


@pytest.mark.parametrize("first", ["hello", "beacon"])
def test_a_beacon_racing_the_hellos_welcome_joins_that_visit(
    server: ServerProcess, site: str, r: redis.Redis, first: str
) -> None:
    """The page is left before the welcome arrived: the widget sends its queue by beacon without
    a session id while the hello opens the session. One visit, one session, whichever of the two
    the server handles first."""
    visitor = new_visitor()
    event = {"id": "q1", "type": "event", "name": "cart_add", "item": {"id": "A", "price": 4}}
    batch = {"site": site, "visitor": visitor, "messages": [event]}
    with Client(server.ws_url) as c:
        if first == "beacon":
            beacon = post(server, batch, site=site)
        c.send({"type": "hello", "v": 1, "site": site, "visitor": visitor})
        if first == "hello":
            beacon = post(server, batch, site=site)
        session = c.recv_until("welcome")["session"]
    assert beacon.json()["session"] == session and beacon.json()["acks"] == ["q1"]
    assert r.smembers(Keys().sessions(site, visitor)) == {session}
    assert r.hget(Keys().session(site, visitor, session), "cart_items") == "1"
    assert r.hget(Keys().profile(site, visitor), "visits") == "1"
    with Client(server.ws_url) as other_tab:  # two hellos are two tabs: they never join
        assert other_tab.hello(site, visitor)["session"] != session


def test_foreign_origin_unknown_site_and_bad_bodies(server: ServerProcess, site: str) -> None:
    ok = {"site": site, "visitor": new_visitor(), "messages": []}
    assert post(server, ok, site=site, origin="https://evil.test").status_code == 403
    assert (
        "access-control-allow-origin"
        not in post(server, ok, site=site, origin="https://evil.test").headers
    )
    unknown = post(server, {**ok, "site": "nosuch"}, site="nosuch")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_site"
    assert post(server, None, site=site, raw=b"{not json").json()["error"]["code"] == "bad_json"
    bad = post(server, {"site": site, "visitor": "x", "messages": []}, site=site)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_field"
    too_many = {**ok, "messages": [{"id": str(i), "type": "ping"} for i in range(101)]}
    assert post(server, too_many, site=site).status_code == 400


def test_oversized_body_is_refused_with_413(server: ServerProcess, site: str) -> None:
    huge = b'{"pad": "' + b"x" * 70_000 + b'"}'
    assert post(server, None, site=site, raw=huge).status_code == 413


def test_cors_preflight_only_for_allowed_origins(server: ServerProcess, site: str) -> None:
    url = f"{server.url}/v1/events?site={site}"
    allowed = httpx.options(
        url, headers={"origin": ORIGIN, "access-control-request-method": "POST"}
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.options(url, headers={"origin": "https://evil.test"})
    assert refused.status_code == 403


def test_consent_withdrawal_in_a_batch_erases_the_visitor(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        c.event("identify", email="x@example.com", consent=True)
    body = {
        "site": site,
        "visitor": visitor,
        "messages": [{"id": "c", "type": "consent", "analytics": False}],
    }
    assert post(server, body, site=site).json()["acks"] == ["c"]
    assert not r.exists(Keys().profile(site, visitor))


def test_offer_reports_in_a_batch_count_like_on_the_socket(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    """A tab closing right after painting sends its report with sendBeacon: the impression
    counts once, a copy sent again changes nothing, clicks count, and a capture is counted and
    rewarded (its answer cannot reach the page)."""
    from ..offers.test_frequency import stats

    save_campaigns(server.redis_url, site, [{
        "id": "news", "name": "Newsletter", "status": "active",
        "variants": [{"key": "a", "offer": {"kind": "email_capture", "headline": "5 EUR off"},
                      "discount": {"type": "fixed", "amount": 5, "code_strategy": "generated"}}],
    }])  # fmt: skip
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        sid = c.hello(site, visitor)["session"]
        offer = c.signal_answer({"type": "signal", "name": "exit_intent", "kind": "top_edge"})
    assert offer is not None
    shown = {"id": "b.1", "type": "offer_shown", "offer": offer["id"], "claim": offer["claim"]}
    body = {"site": site, "visitor": visitor, "session": sid, "messages": [shown]}
    for _ in range(2):  # sent again: the same message id
        answer = post(server, body, site=site)
        assert answer.status_code == 200 and answer.json()["acks"] == ["b.1"]
    capture = {"id": "b.2", "type": "offer_capture", "offer": offer["id"],
               "claim": offer["claim"], "email": "ada@example.com", "consent": True}  # fmt: skip
    clicked = {"id": "b.3", "type": "offer_clicked", "offer": offer["id"], "action": "cta"}
    answer = post(server, {**body, "messages": [capture, clicked]}, site=site)
    assert answer.status_code == 200 and answer.json()["acks"] == ["b.2", "b.3"]
    assert stats(r, site, "news") == {"exposures:a": 1.0, "impressions:a": 1.0, "clicks:a": 1.0,
                                      "captures:a": 1.0, "consented_captures:a": 1.0}  # fmt: skip
    profile = r.hgetall(KEYS.profile(site, visitor))
    assert profile["email"] == "ada@example.com" and profile["email_consent_source"] == "widget"
    held = r.hget(KEYS.campaign_visitor(site, "news", visitor), "code") or ""
    assert held.startswith("SAVE-")
