"""Helpers the tests share: a real server process, real WebSocket clients, sites in Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from widget_server.store.client import open_store
from widget_server.store.embedded import free_port
from widget_server.store.frequency import Frequency
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry, new_site

ROOT = Path(__file__).resolve().parent.parent
# Browser tests save screenshots here: a throwaway folder, unless SCREENSHOTS_DIR names one
# (`SCREENSHOTS_DIR=docs/img make test` refreshes the pictures the README shows).
SCREENSHOTS = (
    ROOT / os.environ["SCREENSHOTS_DIR"]
    if os.environ.get("SCREENSHOTS_DIR")
    else (Path(tempfile.gettempdir()) / "widget-server-screenshots")
)


class ServerProcess:
    """``widget-server serve`` in a child process on a free port, against a given Redis."""

    def __init__(self, redis_url: str, data_dir: Path, *, workers: int = 1, **env: str) -> None:
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.port = free_port()
        self.workers = workers
        self.extra_env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis_url,
            WIDGET_DATA_DIR=str(self.data_dir),
            WIDGET_LOG_FORMAT="text",
            WIDGET_LOG_LEVEL="warning",
        )
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(self.port),
             "--workers", str(self.workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class SiteOwners:
    """Which test made each site, so that a test can tell its own sites from another test's.

    ``current`` is the test running now, or ``FILE::<fixtures>`` while the fixtures shared by a
    file (module- and session-scoped) are set up. ``tests/conftest.py`` keeps it up to date.
    """

    current = "<session>"
    of: ClassVar[dict[str, str]] = {}

    @classmethod
    def record(cls, site: str) -> None:
        cls.of[site] = cls.current


def add_site(
    redis_url: str,
    origins: list[str] | None = None,
    key: str | None = None,
    *,
    keys: Keys | None = None,
    frequency: Frequency | None = None,
    holdout: float = 0.0,
    locale: str = "en",
) -> str:
    """Create a site with a fresh key (so tests never share state) and return its key.
    ``frequency``: the site's frequency policy (default: the product's default, one offer per
    visit); tests of one campaign's own caps lift it with :data:`NO_SITE_LIMITS`. ``holdout``:
    the share of the site-wide holdout."""
    key = key or "t" + secrets.token_hex(5)

    async def save() -> None:
        client = open_store(redis_url)
        try:
            await SiteRegistry(client, keys or Keys()).save(
                new_site(
                    key,
                    origins=origins if origins is not None else ["https://shop.test"],
                    frequency=frequency,
                    holdout=holdout,
                    locale=locale,
                )
            )
        finally:
            await client.aclose()

    asyncio.run(save())
    SiteOwners.record(key)
    return key


NO_SITE_LIMITS = Frequency(
    per_session=0, per_day=0, discount_days=0, live_per_session=0, live_per_day=0
)


def codes_unreplicated(node: ServerProcess) -> float:
    """``widget_codes_unreplicated_total`` of a server: unique codes shown before a replica had
    them."""
    metrics = httpx.get(node.url + "/metrics").text
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("widget_codes_unreplicated_total")
    )


def sockets_settled(node: ServerProcess, timeout: float = 15.0) -> None:
    """Wait until the node has no visitor socket open: every closed one has run its closing
    work (``widget_connections`` counts a socket until that is done)."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = httpx.get(node.url + "/metrics").text
        open_now = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("widget_connections ")
        )
        if open_now == 0:
            return
        assert time.monotonic() < deadline, f"{open_now} sockets still open"
        time.sleep(0.05)


def closed_with(client: Client, timeout: float = 5.0) -> int | None:
    """Read until the server closes the connection; the close code the client received (None
    for a close without one, or when it stayed open for ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            client.conn.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    return None


def new_visitor() -> str:
    return "v" + secrets.token_hex(8)


class Client:
    """A WebSocket client that speaks protocol v1 and numbers its messages."""

    def __init__(self, ws_url: str, *, origin: str | None = "https://shop.test", **kw: Any):
        self.conn: ClientConnection = connect(
            ws_url,
            origin=origin,
            open_timeout=5,
            legacy=True,
            **kw,  # type: ignore[arg-type]
        )
        self._seq = 0
        self._page = secrets.token_hex(3)  # like the widget: ids unique to this page

    def next_id(self) -> str:
        self._seq += 1
        return f"{self._page}.{self._seq}"

    def send(self, message: dict[str, Any]) -> str:
        message.setdefault("id", self.next_id())
        self.conn.send(json.dumps(message))
        return str(message["id"])

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return json.loads(self.conn.recv(timeout=timeout))

    def recv_until(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if message.get("type") == type_:
                return message

    def hello(
        self, site: str, visitor: str, session: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "hello", "v": 1, "site": site, "visitor": visitor}
        if session:
            body["session"] = session
        body.update(extra)
        self.send(body)
        welcome = self.recv_until("welcome")
        self.recv_until("ack")
        return welcome

    def event(self, name: str, **fields: Any) -> dict[str, Any]:
        """Send an event and return the server's answer to it (ack or error)."""
        msg_id = self.send({"type": "event", "name": name, **fields})
        return self.answer(msg_id)

    def answer(self, msg_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if message.get("type") == "ack" and msg_id in message["ids"]:
                return message
            if message.get("type") == "error" and message.get("id") == msg_id:
                return message

    def signal_answer(self, signal: dict[str, Any], timeout: float = 15.0) -> dict[str, Any] | None:
        """Send a signal; return the offer it produced, or None (nothing, or a ``withdraw``).

        A ``ping`` follows the signal: the server handles one socket's messages in order, so its
        ``pong`` comes after everything the signal caused, however slow the machine is.
        """
        msg_id = self.send(dict(signal))
        self.send({"type": "ping"})
        acked, offer = False, None
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            kind = message.get("type")
            if kind == "ack" and msg_id in message["ids"]:
                acked = True
            elif kind == "error" and message.get("id") == msg_id:
                raise AssertionError(f"the signal was refused: {message}")
            elif kind == "offer":
                offer = dict(message["offer"])
            elif kind == "withdraw":
                offer = None
            elif kind == "pong":
                assert acked, "pong before the signal's ack"
                return offer

    def painted(self, offer: dict[str, Any]) -> None:
        """Report an offer painted, as the widget does (``offer_shown`` with its claim), and
        wait until the server has handled it (a ``pong`` after its ``ack``)."""
        msg_id = self.send({"type": "offer_shown", "offer": offer["id"], "claim": offer["claim"]})
        self.send({"type": "ping"})
        acked = False
        while True:
            message = self.recv()
            if message.get("type") == "ack" and msg_id in message["ids"]:
                acked = True
            elif message.get("type") == "error" and message.get("id") == msg_id:
                raise AssertionError(f"offer_shown was refused: {message}")
            elif message.get("type") == "pong":
                assert acked, "pong before the report's ack"
                return

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_server(redis_url: str, data_dir: Path, **kw: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(redis_url, data_dir, **kw).start()
    try:
        yield server
    finally:
        server.stop()


def save_campaigns(redis_url: str, site: str, campaigns: list[dict[str, Any]]) -> None:
    """Store campaigns through the product's own store (every node hears about the change)."""
    from widget_server.offers.campaign_store import CampaignStore

    async def save() -> None:
        client = open_store(redis_url)
        try:
            store = CampaignStore(client, Keys())
            for campaign in campaigns:
                await store.save(site, campaign, author="tests")
        finally:
            await client.aclose()

    asyncio.run(save())


def message_campaign(cid: str, **overrides: Any) -> dict[str, Any]:
    campaign: dict[str, Any] = {
        "id": cid,
        "name": cid,
        "status": "active",
        "variants": [{"key": "a", "offer": {"kind": "message", "headline": f"Offer {cid}"}}],
    }
    campaign.update(overrides)
    return campaign


def discount_campaign(cid: str, strategy: str = "generated", **overrides: Any) -> dict[str, Any]:
    discount: dict[str, Any] = {
        "type": "percent",
        "amount": 10,
        "code_strategy": strategy,
        "valid_minutes": 30,
    }
    if strategy == "static":
        discount["static_code"] = "WELCOME10"
    campaign = message_campaign(cid, **overrides)
    campaign["variants"] = [
        {"key": "a", "offer": {"kind": "discount", "headline": "10% off"}, "discount": discount}
    ]
    return campaign


def run_benchmark(script: str, *args: str, timeout: float) -> str:
    """Run ``benchmarks/SCRIPT --quick ARGS`` and return what it printed on stdout.

    It runs in a session of its own, and the whole process group (its servers, Valkey, load
    generators) is killed when it ends or runs out of time: nothing it started outlives the test.
    Give the test a pytest timeout above ``timeout``, so that this one fires first.
    """
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"benchmarks/{script} --quick did not finish in {timeout} s") from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == 0, f"exit {process.returncode}\n{stderr[-4000:]}"
    return stdout


_COVARIATE_SUMS = re.compile(r"^(xn|x\d+|xx\d+_\d+):")


def campaign_counts(r: Any, site: str, campaign: str, keys: Keys | None = None) -> dict[str, float]:
    """A campaign's counters summed over its days (``exposures:a``...), without the
    covariates' sums kept at exposure (``xn:a``, ``x0:a``...: their own tests check them)."""
    stats = (keys or Keys()).campaign_stats(site, campaign, "*")
    pattern = stats.replace("{", "[{]").replace("}", "[}]")
    total: dict[str, float] = {}
    for key in r.scan_iter(pattern):
        for name, value in r.hgetall(key).items():
            if not _COVARIATE_SUMS.match(name):
                total[name] = total.get(name, 0) + float(value)
    return total
