"""A visitor who stops reading can't hold the others: during a run of live offers, the socket
whose buffer fills is closed with 4008 and every other visitor still gets every offer in time."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from widget_server.metrics import Metrics
from widget_server.offers.campaign_store import CampaignStore
from widget_server.offers.engine import OfferEngine
from widget_server.store.client import open_store
from widget_server.store.keys import Keys
from widget_server.store.scripts import Scripts
from widget_server.visitors.sessions import SessionStore

from ..support import (
    NO_SITE_LIMITS,
    Client,
    ServerProcess,
    add_site,
    message_campaign,
    new_visitor,
    save_campaigns,
)

LIVE_OFFERS = 40
BODY = "Everything in the shop at half price until midnight. " * 9  # ~480 characters


@pytest.fixture(scope="module")
def small_buffers(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    node = ServerProcess(
        redis_url, tmp_path_factory.mktemp("slow"), WIDGET_SEND_BUFFER_BYTES="4096"
    ).start()
    yield node
    node.stop()


class StalledReader:
    """A visitor's socket that says hello, reads its welcome and then stops reading (a small
    receive buffer, like a phone on a bad link)."""

    def __init__(self, ws_url: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        uri = parse_uri(ws_url)
        self.sock.connect((uri.host, uri.port))
        self.protocol = ClientProtocol(uri, origin="https://shop.test")  # type: ignore[arg-type]
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.messages: list[dict[str, object]] = []
        self.closed_with: int | None = None
        while self.protocol.state is State.CONNECTING:
            self._read_some(5.0)
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def hello(self, site: str) -> None:
        body = {"type": "hello", "v": 1, "id": "s.1", "site": site, "visitor": new_visitor()}
        self.protocol.send_text(json.dumps(body).encode())
        self._flush()
        while not any(m.get("type") == "ack" for m in self.messages):
            self._read_some(5.0)

    def _read_some(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.messages.append(json.loads(event.data))
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                self.closed_with = Close.parse(event.data).code
        return bool(data)

    def read_to_the_end(self, timeout: float) -> None:
        """Start reading again: whatever the server left, up to its close frame."""
        deadline = time.monotonic() + timeout
        while self.closed_with is None and time.monotonic() < deadline:
            try:
                if not self._read_some(max(0.05, deadline - time.monotonic())):
                    return
            except (TimeoutError, ConnectionError):
                return


def offers_of(c: Client, count: int, within: float) -> int:
    got = 0
    deadline = time.monotonic() + within
    while got < count and (left := deadline - time.monotonic()) > 0:
        try:
            if c.recv(timeout=left).get("type") == "offer":
                got += 1
        except TimeoutError:
            break
    return got


async def start_live_offers(redis_url: str, site: str, campaigns: list[str]) -> None:
    client = open_store(redis_url)
    keys = Keys()
    scripts = Scripts.of(client)
    sessions = SessionStore(
        client, scripts, keys, session_ttl_s=1800, profile_ttl_s=86400, presence_ttl_s=90
    )
    engine = OfferEngine(client, scripts, keys, CampaignStore(client, keys), sessions, Metrics())
    try:
        for campaign in campaigns:
            await engine.start_live(site, campaign, 5)
    finally:
        await client.aclose()


def slow_closes(node: ServerProcess) -> float:
    for line in httpx.get(node.url + "/metrics").text.splitlines():
        if line.startswith("widget_closes_total") and 'code="4008"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_visitor_who_stops_reading_is_closed_and_the_others_still_get_every_live_offer(
    small_buffers: ServerProcess, redis_url: str
) -> None:
    site = add_site(redis_url, frequency=NO_SITE_LIMITS)
    names = [f"flash{i}" for i in range(LIVE_OFFERS)]
    live = {"exit_intent": [], "live": True}
    save_campaigns(redis_url, site, [
        message_campaign(name, trigger=live,
                         variants=[{"key": "a", "offer": {"kind": "message", "headline": name,
                                                           "body": BODY}}])
        for name in names
    ])  # fmt: skip
    before = slow_closes(small_buffers)
    stalled = StalledReader(small_buffers.ws_url)
    stalled.hello(site)
    clients = [Client(small_buffers.ws_url) for _ in range(20)]
    try:
        for c in clients:
            c.hello(site, new_visitor())
        with ThreadPoolExecutor(len(clients)) as pool:
            receiving = [pool.submit(offers_of, c, LIVE_OFFERS, 20.0) for c in clients]
            asyncio.run(start_live_offers(redis_url, site, names))
            # Every reading visitor gets every offer, although one socket stopped reading.
            assert [r.result() for r in receiving] == [LIVE_OFFERS] * len(clients)
        assert slow_closes(small_buffers) == before + 1
        stalled.read_to_the_end(10.0)
        # What it had not read is still there, then the documented close code.
        assert stalled.closed_with == 4008
        got = [m for m in stalled.messages if m.get("type") == "offer"]
        assert 0 < len(got) < LIVE_OFFERS
    finally:
        for c in clients:
            c.close()
        stalled.sock.close()
