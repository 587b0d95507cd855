"""Fixtures: one real embedded Valkey and one real server process for each pytest process, and a
guard that fails a test when pub/sub carried a message for a site another test made."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from widget_server.store.embedded import EmbeddedValkey
from widget_server.store.local_cluster import LocalCluster

from .support import ServerProcess, SiteOwners, add_site


@pytest.fixture(scope="session", autouse=True)
def clean_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers and commands the tests start inherit ``os.environ``: leave out the product's
    settings of the developer's shell, and give commands a data directory outside the checkout
    (each pytest process its own)."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("WIDGET_", "MAIL_", "SMTP_")) or name == "REDIS_URL":
            del os.environ[name]
    os.environ["WIDGET_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), persist=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(valkey: EmbeddedValkey) -> str:
    return valkey.url


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Valkey cluster of 3 masters and 3 replicas for the pytest process (started on first use).
    Tests share it: they use keys of their own and leave every node running; a test that kills
    nodes builds a cluster of its own."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()  # stops whatever it started when it fails
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(redis_url, tmp_path_factory.mktemp("server")).start()
    yield process
    process.stop()


@pytest.fixture
def site(redis_url: str) -> str:
    return add_site(redis_url)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def two_nodes(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on the same Valkey, as two nodes behind a load balancer."""
    base = tmp_path_factory.mktemp("nodes")
    a = ServerProcess(redis_url, Path(base) / "a").start()
    b = ServerProcess(redis_url, Path(base) / "b").start()
    yield a, b
    a.stop()
    b.stop()


# --- the guard --------------------------------------------------------------------------------
MARKER_CHANNEL = "tests:marker"


class BroadcastWatch:
    """Every message on any key prefix's broadcast channel (site-wide pushes, live offers,
    campaign and site changes), with the site it names, in the order Valkey delivered them.

    ``mark()`` publishes a marker and waits until it comes back, so every message published
    before it has been seen: the messages between two marks are those of one test.
    """

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._subscribe()
        self._seen: list[tuple[str, str]] = []  # (channel, site), or (MARKER_CHANNEL, token)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broadcast-watch", daemon=True)
        self._thread.start()

    def _subscribe(self) -> redis.client.PubSub:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("*:broadcast")
        pubsub.subscribe(MARKER_CHANNEL)
        return pubsub

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.2)
            except (redis.RedisError, OSError, ValueError):  # subscribe again: a test's outage
                time.sleep(0.2)
                with contextlib.suppress(redis.RedisError, OSError):
                    self._pubsub = self._subscribe()
                continue
            if message is None:
                continue
            channel = message["channel"].decode()
            data = message["data"]
            site = data.decode() if channel == MARKER_CHANNEL else _site_of(data)
            if site:
                with self._changed:
                    self._seen.append((channel, site))
                    self._changed.notify_all()

    def mark(self, timeout: float = 10.0) -> int:
        """Publish a marker, wait until it is seen; return its position."""
        token = secrets.token_hex(8)
        self._client.publish(MARKER_CHANNEL, token)
        with self._changed:
            found = self._changed.wait_for(
                lambda: (MARKER_CHANNEL, token) in self._seen, timeout=timeout
            )
            assert found, "the pub/sub guard did not hear its own marker"
            return self._seen.index((MARKER_CHANNEL, token))

    def sites_between(self, start: int, end: int) -> list[tuple[str, str]]:
        with self._changed:
            return [seen for seen in self._seen[start:end] if seen[0] != MARKER_CHANNEL]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()


def _site_of(data: bytes) -> str:
    try:
        envelope = json.loads(data)
    except ValueError:
        return ""
    return str(envelope.get("site") or "") if isinstance(envelope, dict) else ""


@pytest.fixture(scope="session")
def broadcast_watch(redis_url: str) -> Iterator[BroadcastWatch]:
    watch = BroadcastWatch(redis_url)
    yield watch
    watch.close()


def _file_owner(item: pytest.Item) -> str:
    return f"{item.nodeid.split('::')[0]}::<fixtures>"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    SiteOwners.current = _file_owner(item)  # the file's shared fixtures are set up first


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    SiteOwners.current = _file_owner(item)


@pytest.fixture(autouse=True)
def no_messages_for_other_tests_sites(
    request: pytest.FixtureRequest, broadcast_watch: BroadcastWatch
) -> Iterator[None]:
    """Fail the test if pub/sub carried, while it ran, a message for a site made by another test
    (or by another file's shared fixtures): the sign of one test's work leaking into another."""
    test = request.node.nodeid
    mine = {test, _file_owner(request.node)}
    start = broadcast_watch.mark()
    SiteOwners.current = test
    yield
    end = broadcast_watch.mark()
    strays = sorted(
        {
            f"{site} (made by {SiteOwners.of[site]}) on {channel}"
            for channel, site in broadcast_watch.sites_between(start, end)
            if SiteOwners.of.get(site, test) not in mine
        }
    )
    assert not strays, f"pub/sub carried messages for other tests' sites: {strays}"
