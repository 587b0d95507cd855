"""Presence and cross-node delivery with two real server processes on one Valkey."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.asyncio import Redis

from widget_server.metrics import Metrics
from widget_server.realtime.hub import Hub
from widget_server.store.keys import Keys
from widget_server.wire import protocol as p

from ..support import Client, ServerProcess, add_site, new_visitor

OFFER = p.OfferBody(
    id="x.a",
    campaign="x",
    variant="a",
    kind="message",
    headline="Hello",
    body="",
    cta=p.OfferCta(label="", url=""),
    theme=p.OfferTheme(accent="#1a73e8", background="#ffffff", text="#1f1f1f", radius=12),
)


def third_node(redis_url: str, action: str, site: str, target: str, message: p.Push) -> int:
    """Act as one more node: publish through the same Hub code the servers run."""

    async def main() -> int:
        client = Redis.from_url(redis_url)
        try:
            hub = Hub(
                client,
                Keys(),
                Metrics(),
                presence_ttl_s=90,
                on_site_changed=lambda _: None,
            )
            if action == "visitor":
                return await hub.send_to_visitor(site, target, message)
            return await hub.broadcast(site, message)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_message_reaches_every_socket_of_a_visitor_on_any_node(
    two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, r: redis.Redis
) -> None:
    a, b = two_nodes
    site = add_site(redis_url)
    visitor, other = new_visitor(), new_visitor()
    tab1, tab2, tab3 = Client(a.ws_url), Client(b.ws_url), Client(b.ws_url)
    stranger = Client(a.ws_url)
    try:
        sid = tab1.hello(site, visitor)["session"]
        tab2.hello(site, visitor, session=sid)
        tab3.hello(site, visitor, session=sid)
        stranger.hello(site, other)
        nodes = set(r.hvals(Keys().connections(site, visitor)))
        assert len(nodes) == 2  # the visitor's sockets live on both processes
        sent = third_node(redis_url, "visitor", site, visitor, p.Withdraw(offer="o1"))
        assert sent == 3
        for tab in (tab1, tab2, tab3):
            assert tab.recv_until("withdraw") == {"type": "withdraw", "offer": "o1"}
        with pytest.raises(TimeoutError):
            stranger.recv(timeout=0.5)
    finally:
        for c in (tab1, tab2, tab3, stranger):
            c.close()


def test_site_broadcast_reaches_every_node_and_only_that_site(
    two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str
) -> None:
    a, b = two_nodes
    site, other_site = add_site(redis_url), add_site(redis_url)
    on_a, on_b, elsewhere = Client(a.ws_url), Client(b.ws_url), Client(b.ws_url)
    try:
        on_a.hello(site, new_visitor())
        on_b.hello(site, new_visitor())
        elsewhere.hello(other_site, new_visitor())
        assert third_node(redis_url, "site", site, "", p.Offer(offer=OFFER)) >= 2
        for c in (on_a, on_b):
            assert c.recv_until("offer")["offer"] == {
                "id": "x.a",
                "campaign": "x",
                "variant": "a",
                "kind": "message",
                "headline": "Hello",
                "body": "",
                "cta": {"label": "", "url": ""},
                "theme": {"accent": "#1a73e8", "background": "#ffffff", "text": "#1f1f1f",
                          "radius": 12},
            }  # fmt: skip
        with pytest.raises(TimeoutError):
            elsewhere.recv(timeout=0.5)
    finally:
        for c in (on_a, on_b, elsewhere):
            c.close()


def test_closing_a_socket_removes_its_presence(
    two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, r: redis.Redis
) -> None:
    a, _ = two_nodes
    site, visitor = add_site(redis_url), new_visitor()
    with Client(a.ws_url) as c:
        c.hello(site, visitor)
        assert r.hlen(Keys().connections(site, visitor)) == 1  # written before the ack
        deadline = time.monotonic() + 5  # the live set (admin's view) right after the ack
        while r.zcard(Keys().live(site)) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.zcard(Keys().live(site)) == 1
    deadline = time.monotonic() + 5
    while r.hlen(Keys().connections(site, visitor)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.hlen(Keys().connections(site, visitor)) == 0
    assert r.zcard(Keys().live(site)) == 0


def test_site_change_reaches_every_node_cache(
    two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str
) -> None:
    a, b = two_nodes
    site = add_site(redis_url, origins=["https://old.test"])
    for node in (a, b):  # warm both caches
        with Client(node.ws_url, origin="https://old.test") as c:
            c.hello(site, new_visitor())
    add_site(redis_url, origins=["https://new.test"], key=site)
    for node in (a, b):
        with Client(node.ws_url, origin="https://new.test") as c:
            assert c.hello(site, new_visitor())["type"] == "welcome"


def test_malformed_bus_messages_are_logged_and_dropped(
    two_nodes: tuple[ServerProcess, ServerProcess], redis_url: str, r: redis.Redis
) -> None:
    """Garbage on a node's own channel and on the broadcast channel is dropped with a warning;
    the node keeps delivering to its sockets, and nothing of the garbage reaches them."""
    a, _ = two_nodes
    site, visitor = add_site(redis_url), new_visitor()
    keys = Keys()
    with Client(a.ws_url) as tab:
        tab.hello(site, visitor)
        ((connection, node),) = r.hgetall(keys.connections(site, visitor)).items()
        on_node = [
            "not json",
            b"\xff\xfe",
            "[]",
            "{}",
            '{"to": "' + connection + '", "msg": {"type": "withdraw", "offer": "o1"}}',
            '{"to": [1, 2], "msg": {"type": "withdraw", "offer": "o1"}}',
            '{"to": ["' + connection + '"], "msg": {"type": "welcome"}}',
            '{"to": ["' + connection + '"], "msg": {"type": "offer", "offer": {"id": "x"}}}',
            '{"to": ["' + connection + '"], "msg": {"type": "withdraw"}}',
            '{"kind": "push", "site": "' + site + '", "msg": {"type": "withdraw", "offer": "o1"}}',
        ]
        on_broadcast = [
            "not json",
            "null",
            '{"kind": "live"}',
            '{"kind": "live", "site": "' + site + '"}',
            '{"kind": "nothing_we_know", "site": "' + site + '"}',
            '{"kind": "push", "site": "' + site + '", "msg": {"type": "erased"}}',
            '{"kind": "push", "site": "' + site + '", "msg": {"type": "offer", "offer": []}}',
            '{"to": ["' + connection + '"], "msg": {"type": "withdraw", "offer": "o1"}}',
        ]
        before = a.log_path.read_text().count("ignoring a malformed pub/sub message")
        for data in on_node:
            r.publish(keys.node_channel(node), data)
        for data in on_broadcast:
            r.publish(keys.broadcast_channel(), data)
        assert third_node(redis_url, "visitor", site, visitor, p.Withdraw(offer="o2")) == 1
        assert tab.recv() == {"type": "withdraw", "offer": "o2"}  # and nothing before it
        assert third_node(redis_url, "site", site, "", p.Withdraw(offer="o3")) >= 2
        assert tab.recv() == {"type": "withdraw", "offer": "o3"}
        expected = before + len(on_node) + len(on_broadcast)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            logged = a.log_path.read_text().count("ignoring a malformed pub/sub message")
            if logged >= expected:
                break
            time.sleep(0.05)
        assert logged == expected
