"""Faults an operator meets with the embedded store: a CLI command that fails while a server runs,
a Valkey that does not answer, a Valkey killed with SIGKILL, one that cannot come back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from widget_server.store.embedded import free_port

from .support import ROOT, Client, new_visitor

pytestmark = pytest.mark.slow


class EmbeddedServer:
    """``widget-server serve`` with no REDIS_URL: it owns the embedded Valkey of its data dir."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env.update(WIDGET_DATA_DIR=str(data_dir), WIDGET_LOG_LEVEL="warning", **env)
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(self.port)],
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(lambda: self.get("/readyz").status_code == 200, "the server to be ready", self)
        self.valkey_port = (data_dir / "valkey" / "url").read_text().strip().rsplit(":", 1)[1]
        self.valkey_port = self.valkey_port.split("/")[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        try:
            return httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return httpx.Response(599)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "widget_server.cli", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def valkeys(self) -> list[psutil.Process]:
        """The valkey-server processes that serve this data directory's port (Valkey shows
        ``valkey-server HOST:PORT`` as its command line) or run in it."""
        port = self.valkey_port
        found = []
        for process in psutil.process_iter(["cmdline", "cwd"]):
            cmdline = " ".join(arg for arg in process.info["cmdline"] or [] if arg)
            if "valkey-server" in cmdline and (
                cmdline.endswith(f":{port}") or str(self.data_dir) in cmdline
            ):
                found.append(process)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for leftover in self.valkeys():
            leftover.kill()


def wait_until(
    check: Callable[[], Any], what: str, server: EmbeddedServer, timeout: float = 60.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {what}; server log:\n{server.log.read_text()}")
        time.sleep(0.1)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path / "data")
    yield server
    server.stop()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("widget-server: error: "), done.stderr
    return done.stderr


def test_a_failing_command_leaves_the_running_server_and_its_store_alone(
    embedded: EmbeddedServer, tmp_path: Path
) -> None:
    url_file = embedded.data_dir / "valkey" / "url"
    url = url_file.read_text()
    missing = one_line_error(embedded.cli("campaigns", "import", str(tmp_path / "nope.json"),
                                          "--site", "demo"))  # fmt: skip
    assert "nope.json" in missing
    assert embedded.cli("sites", "add", "faulty", "--origin", "https://shop.test").returncode == 0
    bad = tmp_path / "bad.json"
    offer = {"kind": "message", "headline": "Hi"}
    campaign = {"id": "c1", "name": "c1", "theme": {"accent": "red;x"},
                "variants": [{"key": "a", "offer": offer}]}  # fmt: skip
    bad.write_text(json.dumps([campaign]))
    invalid = embedded.cli("campaigns", "import", str(bad), "--site", "faulty")
    assert invalid.returncode == 2 and "Traceback" not in invalid.stderr, invalid.stderr
    # The tools still reach the server's own Valkey: one store, one AOF, one writer.
    assert url_file.read_text() == url
    assert len(embedded.valkeys()) == 1
    added = embedded.cli("sites", "add", "later", "--origin", "https://shop.test")
    assert added.returncode == 0, added.stderr
    with Client(f"ws://127.0.0.1:{embedded.port}/v1/ws") as c:  # the server sees what it added
        assert c.hello("later", new_visitor())["type"] == "welcome"
    assert len(embedded.valkeys()) == 1


def test_a_command_never_starts_a_second_valkey_on_a_running_servers_data(
    embedded: EmbeddedServer,
) -> None:
    [valkey] = embedded.valkeys()
    valkey.suspend()  # the server's Valkey stops answering for a while
    try:
        refused = one_line_error(embedded.cli("sites", "list"))
    finally:
        valkey.resume()
    assert "belongs to a running widget-server" in refused
    assert embedded.valkeys() == [valkey]
    assert embedded.cli("sites", "list").returncode == 0


def test_a_killed_valkey_is_started_again_with_its_data(embedded: EmbeddedServer) -> None:
    assert embedded.cli("sites", "add", "kept", "--origin", "https://shop.test").returncode == 0
    time.sleep(1.5)  # the AOF is fsynced every second: what is older than that survives a kill
    [valkey] = embedded.valkeys()
    # The store first stops answering (so the server is seen unready whatever the machine's
    # speed: a killed one is often back before a poll), then dies.
    valkey.suspend()
    wait_until(lambda: embedded.get("/readyz").status_code == 503, "unready server", embedded)
    assert embedded.get("/healthz").status_code == 200  # alive: only the store is away
    valkey.kill()
    wait_until(lambda: embedded.get("/readyz").status_code == 200, "store back", embedded)
    [again] = embedded.valkeys()
    assert again.pid != valkey.pid and not psutil.pid_exists(valkey.pid)  # reaped, no zombie
    with Client(f"ws://127.0.0.1:{embedded.port}/v1/ws") as c:
        assert c.hello("kept", new_visitor())["type"] == "welcome"
    metrics = embedded.get("/metrics").text
    assert "widget_embedded_store_restarts 1.0" in metrics
    assert "widget_embedded_store_up 1.0" in metrics


def test_a_valkey_that_cannot_come_back_makes_healthz_fail_with_the_reason(
    tmp_path: Path,
) -> None:
    server = EmbeddedServer(tmp_path / "data", WIDGET_EMBEDDED_RESTARTS="2")
    try:
        assert server.cli("sites", "add", "s1", "--origin", "https://shop.test").returncode == 0
        time.sleep(1.5)
        [incr] = (server.data_dir / "valkey" / "appendonlydir").glob("*.incr.aof")
        with incr.open("ab") as aof:
            aof.write(b"this is no command\r\n")  # a damaged AOF: Valkey refuses to load it
        [valkey] = server.valkeys()
        valkey.kill()
        wait_until(lambda: server.get("/healthz").status_code == 503, "failed healthz", server)
        reason = server.get("/healthz").text
        assert "the embedded Valkey is down" in reason and "Bad file format" in reason, reason
        assert "widget_embedded_store_up 0.0" in server.get("/metrics").text
        assert server.valkeys() == []
    finally:
        server.stop()


def test_a_port_taken_while_valkey_is_down_is_the_reason_healthz_gives(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "data", WIDGET_EMBEDDED_RESTARTS="2")
    squatter = socket.socket()
    try:
        [valkey] = server.valkeys()
        valkey.kill()
        valkey.wait(10)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", int(server.valkey_port)))  # another program takes the port
        squatter.listen()
        wait_until(lambda: server.get("/healthz").status_code == 503, "failed healthz", server)
        reason = server.get("/healthz").text
        assert "the embedded Valkey is down" in reason and "in use" in reason, reason
    finally:
        squatter.close()
        server.stop()


def test_a_data_directory_that_cannot_be_used_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["WIDGET_DATA_DIR"] = str(blocker / "data")
    for args in (["serve", "--port", str(free_port())], ["sites", "list"]):
        done = subprocess.run(
            [sys.executable, "-m", "widget_server.cli", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        error = one_line_error(done)
        assert "data directory" in error and "Not a directory" in error
        assert error.count("\n") == 1
