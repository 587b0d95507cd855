"""The visitor WebSocket against a real server process and a real Valkey."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from widget_server.store.keys import Keys
from widget_server.store.local_cluster import LocalCluster

from ..support import (
    NO_SITE_LIMITS,
    Client,
    ServerProcess,
    add_site,
    closed_with,
    discount_campaign,
    message_campaign,
    new_visitor,
    running_server,
    save_campaigns,
)


def session_hash(r: redis.Redis, site: str, visitor: str, sid: str) -> dict[str, str]:
    return r.hgetall(Keys().session(site, visitor, sid))  # type: ignore[return-value]


def visitor_keys(r: redis.Redis, site: str, visitor: str) -> list[str]:
    pattern = Keys().tag(site, visitor).replace("{", "[{]").replace("}", "[}]") + "*"
    return r.keys(pattern)  # type: ignore[return-value]


def test_hello_welcome_events_and_acks(server: ServerProcess, site: str, r: redis.Redis) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        welcome = c.hello(site, visitor, page={"url": "https://shop.test/", "page_type": "home"})
        assert welcome["resumed"] is False and welcome["visitor"] == visitor
        assert welcome["config"]["max_frame_bytes"] == 16384
        assert (
            c.event("page_view", url="https://shop.test/p/1", page_type="product")["type"] == "ack"
        )
        assert c.event("cart_add", item={"id": "P1", "price": 12.5, "quantity": 2})["type"] == "ack"
        signal_id = c.send({"type": "signal", "name": "exit_intent", "kind": "top_edge"})
        assert c.answer(signal_id)["type"] == "ack"
    state = session_hash(r, site, visitor, welcome["session"])
    assert state["pages"] == "1" and state["page_type"] == "product"
    assert abs(int(r.get(Keys().site_seen(site))) - time.time()) < 60  # the install check
    assert state["cart_value"] == "25" and state["signals"] == "1"
    assert state["last_signal_kind"] == "top_edge"


def test_scroll_depth_and_time_on_page_show_the_campaigns_they_trigger(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url, frequency=NO_SITE_LIMITS)
    save_campaigns(server.redis_url, site, [
        message_campaign("reading", priority=30, trigger={"exit_intent": [], "scroll_depth": 50}),
        message_campaign("lingering", priority=20,
                         trigger={"exit_intent": [], "time_on_page": 20}),
        message_campaign("leaving", priority=10, trigger={"exit_intent": ["top_edge"],
                                                          "scroll_depth": 80, "time_on_page": 20}),
        message_campaign("paused", status="paused",
                         trigger={"exit_intent": [], "scroll_depth": 10, "time_on_page": 5}),
    ])  # fmt: skip
    visitor = new_visitor()

    def campaign(offer: dict[str, object] | None) -> object:
        return offer and offer["campaign"]

    with Client(server.ws_url) as c:
        welcome = c.hello(site, visitor, page={"url": "https://shop.test/p", "page_type": "home"})
        # The thresholds of the active campaigns, each once, in order (not the paused one's).
        assert welcome["config"]["scroll_depth"] == [50, 80]
        assert welcome["config"]["time_on_page"] == [20]
        # The exit-intent offer is armed with its scroll and time thresholds, to show at once.
        armed = c.recv_until("arm")["offer"]
        assert armed["campaign"] == "leaving" and armed["kinds"] == ["top_edge"]
        assert armed["scroll_depth"] == 80 and armed["time_on_page"] == 20
        scroll = {"type": "signal", "name": "scroll_depth"}
        assert c.signal_answer({**scroll, "percent": 30}) is None
        assert campaign(c.signal_answer({**scroll, "percent": 60})) == "reading"
        time_on_page = {"type": "signal", "name": "time_on_page"}
        assert c.signal_answer({**time_on_page, "seconds": 19}) is None
        assert campaign(c.signal_answer({**time_on_page, "seconds": 20})) == "lingering"
        # Exit intent shows only the campaign whose marketer ticked it.
        exit_intent = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
        assert campaign(c.signal_answer(exit_intent)) == "leaving"
    state = session_hash(r, site, visitor, welcome["session"])
    assert state["last_scroll_percent"] == "60" and state["last_time_on_page_s"] == "20"
    assert state["signals"] == "1"  # exit intents only


def test_resume_after_reconnect_and_replay_counts_once(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        sid = c.hello(site, visitor)["session"]
        c.send(
            {"id": "add-1", "type": "event", "name": "cart_add", "item": {"id": "A", "price": 3}}
        )
        c.answer("add-1")
    with Client(server.ws_url) as c:
        welcome = c.hello(site, visitor, session=sid)
        assert welcome["resumed"] is True and welcome["session"] == sid
        c.send(
            {"id": "add-1", "type": "event", "name": "cart_add", "item": {"id": "A", "price": 3}}
        )
        assert c.answer("add-1")["type"] == "ack"  # acked again, applied once
    assert session_hash(r, site, visitor, sid)["cart_items"] == "1"


def test_ping_pong(server: ServerProcess, site: str) -> None:
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        c.send({"id": "p1", "type": "ping"})
        assert c.recv() == {"type": "pong", "id": "p1"}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{oops", "bad_json"),
        ("[1,2]", "bad_message"),
        ('{"type": "ping"}', "missing_id"),
        ('{"id": "x", "type": "warp"}', "unknown_type"),
        ('{"id": "x", "type": "event", "name": "cart_add", "item": {"id": 5}}', "invalid_field"),
        ('{"id": "x", "type": "signal", "name": "scroll_depth", "percent": 150}', "invalid_field"),
        ('{"id": "x", "type": "signal", "name": "scroll_depth", "percent": 0.5}', "invalid_field"),
        ('{"id": "x", "type": "signal", "name": "time_on_page", "seconds": "20"}', "invalid_field"),
        ('{"id": "x", "type": "signal", "name": "time_on_page"}', "invalid_field"),
        ('{"id": "x", "type": "hello", "site": "s", "visitor": "visitor-1"}', "hello_repeated"),
    ],
)
def test_bad_messages_get_an_error_and_the_connection_goes_on(
    server: ServerProcess, site: str, r: redis.Redis, frame: str, code: str
) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        sid = c.hello(site, visitor)["session"]
        before = session_hash(r, site, visitor, sid)
        c.conn.send(frame)
        error = c.recv()
        assert error["type"] == "error" and error["code"] == code and error["message"]
        assert session_hash(r, site, visitor, sid) == before  # nothing partial was written
        assert c.event("page_view", url="https://shop.test/")["type"] == "ack"


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ('{"id": "1", "type": "ping"}', "hello_required"),
        ("not json at all", "bad_json"),
        (
            '{"id": "1", "type": "hello", "v": 9, "site": "s", "visitor": "visitor-1"}',
            "unsupported_version",
        ),
    ],
)
def test_first_message_must_be_a_valid_hello(server: ServerProcess, first: str, code: str) -> None:
    with Client(server.ws_url) as c:
        c.conn.send(first)
        assert c.recv()["code"] == code
        assert closed_with(c) == 1008


def test_unknown_site_is_refused_before_any_state(server: ServerProcess, r: redis.Redis) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.send({"type": "hello", "site": "no-such-site", "visitor": visitor})
        assert c.recv()["code"] == "unknown_site"
        assert closed_with(c) == 1008
    assert visitor_keys(r, "no-such-site", visitor) == []


def test_foreign_origin_is_refused_before_any_state(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    visitor = new_visitor()
    with Client(server.ws_url, origin="https://evil.test") as c:
        c.send({"type": "hello", "site": site, "visitor": visitor})
        assert c.recv()["code"] == "origin_not_allowed"
        assert closed_with(c) == 1008
    assert visitor_keys(r, site, visitor) == []


def test_site_in_url_is_checked_at_the_handshake(server: ServerProcess, site: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(
            server.ws_url + "?site=" + site, origin="https://evil.test", open_timeout=5, legacy=True
        )
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        connect(
            server.ws_url + "?site=nosuch", origin="https://shop.test", open_timeout=5, legacy=True
        )
    with Client(server.ws_url + "?site=" + site) as ok:
        assert ok.hello(site, new_visitor())["type"] == "welcome"


def test_binary_frames_are_refused(server: ServerProcess, site: str) -> None:
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        c.conn.send(b"\x00\x01binary")
        assert c.recv()["code"] == "binary_not_supported"
        assert closed_with(c) == 1003


def test_oversized_frame_closes_with_1009(server: ServerProcess, site: str) -> None:
    with Client(server.ws_url, max_size=None) as c:
        c.hello(site, new_visitor())
        big = json.dumps({"id": "big", "type": "ping", "pad": "x" * 20_000})
        c.conn.send(big)
        assert c.recv()["code"] == "frame_too_large"
        assert closed_with(c) == 1009


def test_no_hello_within_the_timeout_closes(redis_url: str, data_dir: object) -> None:
    from pathlib import Path

    with (
        running_server(redis_url, Path(str(data_dir)), WIDGET_HELLO_TIMEOUT="0.5") as srv,
        Client(srv.ws_url) as c,
    ):
        error = c.recv(timeout=5)
        assert error["code"] == "hello_required"
        assert closed_with(c) == 1008


def test_flood_gets_rate_limited_then_closed_and_others_keep_working(
    redis_url: str, data_dir: object
) -> None:
    from pathlib import Path

    env = {"WIDGET_RATE_PER_SECOND": "5", "WIDGET_RATE_BURST": "10"}
    with running_server(redis_url, Path(str(data_dir)), **env) as srv:
        site = add_site(redis_url)
        with Client(srv.ws_url) as calm, Client(srv.ws_url) as flood:
            calm.hello(site, new_visitor())
            flood.hello(site, new_visitor())
            codes: list[str] = []
            close_code = None
            with contextlib.suppress(ConnectionClosed):
                for i in range(200):
                    flood.send({"id": f"f{i}", "type": "ping"})
            try:
                while True:
                    message = flood.recv(timeout=5)
                    if message["type"] == "error":
                        codes.append(message["code"])
            except ConnectionClosed as exc:
                close_code = exc.rcvd.code if exc.rcvd else None
            assert "rate_limited" in codes and codes[-1] == "flood"
            assert close_code == 1008
            assert calm.event("page_view", url="https://shop.test/")["type"] == "ack"


def test_many_connections_at_once_each_get_their_own_session(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            visitor = new_visitor()
            with Client(server.ws_url) as c:
                sid = c.hello(site, visitor)["session"]
                for n in range(5):
                    c.event("cart_add", item={"id": f"P{n}", "price": 1})
                results[visitor] = sid
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(results) == 20
    for visitor, sid in results.items():
        assert session_hash(r, site, visitor, sid)["cart_items"] == "5"


def test_consent_withdrawal_erases_the_visitor_and_closes(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor, consent={"analytics": True})
        c.event("identify", email="shopper@example.com", consent=True)
        assert visitor_keys(r, site, visitor)
        msg_id = c.send({"type": "consent", "analytics": False})
        assert c.answer(msg_id)["type"] == "ack"
        assert closed_with(c) == 1000
    assert [k for k in visitor_keys(r, site, visitor) if not k.endswith(":conns")] == []


def test_expired_session_is_replaced_with_a_new_welcome(
    redis_url: str, data_dir: object, r: redis.Redis
) -> None:
    from pathlib import Path

    with running_server(redis_url, Path(str(data_dir)), WIDGET_SESSION_TTL="10") as srv:
        site = add_site(redis_url)
        visitor = new_visitor()
        with Client(srv.ws_url) as c:
            old = c.hello(site, visitor)["session"]
            r.delete(Keys().session(site, visitor, old))  # as if the TTL ran out
            msg_id = c.send({"type": "event", "name": "page_view", "url": "https://shop.test/"})
            welcome = c.recv_until("welcome")
            assert welcome["session"] != old and welcome["resumed"] is False
            assert c.answer(msg_id)["type"] == "ack"
            assert session_hash(r, site, visitor, welcome["session"])["pages"] == "1"


def test_scripts_are_reloaded_after_a_script_flush(
    server: ServerProcess, site: str, r: redis.Redis
) -> None:
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        assert c.event("page_view", url="https://shop.test/")["type"] == "ack"
        r.script_flush()  # as after a Redis restart without persistence of the script cache
        assert c.event("page_view", url="https://shop.test/2")["type"] == "ack"


def test_connection_limits_per_address_per_site_and_per_node(
    redis_url: str, data_dir: Path
) -> None:
    """Over a limit, a socket gets ``over_capacity`` and close 1013; what it held is given back."""
    limits = {"WIDGET_MAX_CONNECTIONS_PER_IP": "3", "WIDGET_MAX_CONNECTIONS_PER_SITE": "4",
              "WIDGET_MAX_CONNECTIONS": "6"}  # fmt: skip
    with running_server(redis_url, data_dir, **limits) as server:
        site, other_site = add_site(redis_url), add_site(redis_url)

        def refused(client: Client) -> tuple[str, int | None]:
            error = client.recv()
            with pytest.raises(ConnectionClosed) as closed:
                client.recv()
            assert closed.value.rcvd is not None
            return error["code"], closed.value.rcvd.code

        def from_address(ip: str) -> Client:
            return Client(server.ws_url, additional_headers={"X-Forwarded-For": ip})

        office = [from_address("198.51.100.1") for _ in range(3)]  # a trusted proxy's clients
        for c in office:
            c.hello(site, new_visitor())
        fourth = from_address("198.51.100.1")
        assert refused(fourth) == ("over_capacity", 1013)
        other = from_address("198.51.100.2")
        other.hello(site, new_visitor())  # another address is not affected
        over_site = from_address("198.51.100.3")
        over_site.send({"type": "hello", "v": 1, "site": site, "visitor": new_visitor()})
        assert refused(over_site) == ("over_capacity", 1013)  # the site holds 4 already
        extra = [from_address(f"198.51.100.{n}") for n in (4, 5)]
        for c in extra:
            c.hello(other_site, new_visitor())  # 6 sockets on the node now
        over_node = from_address("198.51.100.9")
        assert refused(over_node) == ("over_capacity", 1013)
        office[0].close()  # a socket that leaves gives its place back
        deadline = time.monotonic() + 10
        while True:
            again = from_address("198.51.100.1")
            try:
                assert again.hello(site, new_visitor())["type"] == "welcome"
                break
            except (ConnectionClosed, AssertionError):
                again.close()
                assert time.monotonic() < deadline, "the freed place was not given back"
                time.sleep(0.1)
        metrics = httpx.get(server.url + "/metrics").text
        for limit in ("address", "site", "node"):
            assert f'widget_connections_refused_total{{limit="{limit}"}} 1.0' in metrics
        for c in [*office, other, *extra, again, fourth, over_site, over_node]:
            c.close()


@pytest.mark.cluster
def test_a_visitor_gone_before_the_answer_is_no_server_error(tmp_path: Path) -> None:
    """A visitor who leaves while the server is still working on an exit intent: the offer has
    nowhere to go, and that is an ordinary end of the connection, not an error with a traceback
    in the log. The code waits for a replica (stopped here: 200 ms), so the visitor is gone
    before the offer is sent."""
    with LocalCluster(tmp_path / "store", masters=1, replicas=1, persist=False) as store:
        url = store.seed_url
        site = add_site(url)
        save_campaigns(url, site, [discount_campaign("gone10")])
        replica = store.replica_of(store.masters()[0])
        assert replica.process is not None
        with running_server(url, tmp_path / "node") as server:
            replica.process.send_signal(signal.SIGSTOP)
            try:
                for _ in range(3):
                    c = Client(server.ws_url)
                    c.hello(site, new_visitor())
                    exit_intent = c.send(
                        {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
                    )
                    assert c.answer(exit_intent)["type"] == "ack"  # the offer comes after it
                    # Gone without a closing handshake, as a closed tab or a lost network.
                    sock = c.conn.socket
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                    time.sleep(0.4)
            finally:
                replica.process.send_signal(signal.SIGCONT)
            with Client(server.ws_url) as c:  # the node carries on
                c.hello(site, new_visitor())
                assert c.event("page_view", url="https://shop.test/")["type"] == "ack"
            logs = server.logs()
        errors = [line for line in logs.splitlines() if line.split()[1:2] == ["error"]]
        assert not errors, logs[-3000:]
