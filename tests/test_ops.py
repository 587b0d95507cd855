"""Operations: health, readiness, metrics, graceful shutdown, and Redis outages."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed

from widget_server.store.embedded import EmbeddedValkey

from .support import Client, ServerProcess, add_site, new_visitor


def test_health_and_readiness(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").text == "ok"
    assert httpx.get(server.url + "/readyz").status_code == 200


def test_metrics_count_connections_messages_and_errors(server: ServerProcess, site: str) -> None:
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        c.event("page_view", url="https://shop.test/")
        c.conn.send("{broken")
        c.recv()
        text = httpx.get(server.url + "/metrics").text
    assert "widget_connections 1.0" in text or "widget_connections " in text
    assert 'widget_messages_total{type="page_view"}' in text
    assert 'widget_protocol_errors_total{code="bad_json"}' in text
    assert "widget_message_seconds_bucket" in text
    assert "widget_decision_seconds_bucket" in text
    assert "widget_redis_errors_total" in text


def test_graceful_shutdown_closes_sockets_with_1012(redis_url: str, tmp_path: Path) -> None:
    server = ServerProcess(redis_url, tmp_path).start()
    site = add_site(redis_url)
    client = Client(server.ws_url)
    client.hello(site, new_visitor())
    server.process.terminate()  # type: ignore[union-attr]
    code = None
    try:
        client.recv(timeout=10)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    assert code == 1012
    assert server.stop() == 0
    assert "Traceback" not in server.logs()


def test_redis_outage_makes_readyz_fail_and_messages_unacked(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "v")  # persisted: the site is still there after the outage
    valkey.start()
    server = ServerProcess(valkey.url, tmp_path / "s").start()
    try:
        site = add_site(valkey.url)
        with Client(server.ws_url) as c:
            c.hello(site, new_visitor())
            valkey.stop()
            try:
                answer = c.event("page_view", url="https://shop.test/")
            except ConnectionClosed as exc:
                raise AssertionError(f"the socket closed ({exc}):\n{server.logs()}") from exc
            assert answer["type"] == "error" and answer["code"] == "unavailable"
            assert httpx.get(server.url + "/readyz").status_code == 503
            assert httpx.get(server.url + "/healthz").status_code == 200
            valkey.start()
            deadline = time.monotonic() + 10
            while httpx.get(server.url + "/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with Client(server.ws_url) as c:  # back to normal after the outage
            assert c.hello(site, new_visitor())["type"] == "welcome"
    finally:
        server.stop()
        valkey.stop()
