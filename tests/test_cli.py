"""The widget-server command: clear errors for misconfiguration, sites, embedded Valkey, workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from widget_server.embedded import free_port

from .support import ROOT, Client, new_visitor


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "widget_server.cli", *args],
        env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL must start with one of"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL has no host"),
        ({"REDIS_URL": "redis://localhost:99999"}, "invalid port"),
        ({"WIDGET_PORT": "eighty"}, "WIDGET_PORT must be a whole number"),
        ({"WIDGET_WORKERS": "0"}, "WIDGET_WORKERS must be between 1 and 256"),
        ({"WIDGET_LOG_LEVEL": "loud"}, "WIDGET_LOG_LEVEL must be one of"),
        ({"WIDGET_DEMO": "maybe"}, "WIDGET_DEMO must be true or false"),
    ],
)
def test_misconfiguration_gives_a_clear_message(env: dict[str, str], message: str) -> None:
    result = cli("serve", env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_redis_is_reported(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = cli(
        "serve",
        "--port",
        str(free_port()),
        env={"REDIS_URL": dead, "WIDGET_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert f"cannot reach Redis at {dead}" in result.stderr


def test_port_taken_is_reported(tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = cli(
            "serve",
            "--port",
            str(port),
            env={"REDIS_URL": redis_url, "WIDGET_DATA_DIR": str(tmp_path)},
        )
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_sites_add_and_list(tmp_path: Path, redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "WIDGET_DATA_DIR": str(tmp_path)}
    key = "cli" + os.urandom(3).hex()
    added = cli(
        "sites",
        "add",
        key,
        "--origin",
        "https://Shop.Example.com/",
        "--currency",
        "usd",
        "--locale",
        "en-US",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    assert "https://shop.example.com" in added.stdout
    again = cli("sites", "add", key, "--origin", "https://x.test", env=env)
    assert again.returncode == 2 and "--replace" in again.stderr
    listed = cli("sites", "list", env=env)
    assert any(line.split()[:3] == [key, "USD", "en-US"] for line in listed.stdout.splitlines())
    bad = cli("sites", "add", "bad key!", "--origin", "https://x.test", env=env)
    assert bad.returncode == 2 and "key" in bad.stderr
    bad_origin = cli("sites", "add", key + "x", "--origin", "javascript:alert(1)", env=env)
    assert bad_origin.returncode == 2 and "origin" in bad_origin.stderr


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


def test_embedded_valkey_persists_sites_across_restarts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(WIDGET_DATA_DIR=str(tmp_path), WIDGET_LOG_LEVEL="warning")
    added = cli("sites", "add", "kept", "--origin", "https://shop.test", env=env)
    assert added.returncode == 0, added.stderr
    assert list((tmp_path / "valkey").glob("**/*.aof")), "the embedded Valkey writes an AOF"
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(port)],
        env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        with Client(f"ws://127.0.0.1:{port}/v1/ws") as c:
            assert c.hello("kept", new_visitor())["type"] == "welcome"
        # while the server runs, CLI commands use its embedded Valkey rather than a second one
        listed = cli("sites", "list", env=env)
        assert "kept" in listed.stdout
    finally:
        process.terminate()
        process.wait(20)
    url_file = tmp_path / "valkey" / "url"
    assert not url_file.exists(), "the embedded Valkey is stopped with the server"


def test_several_workers_share_one_redis(tmp_path: Path, redis_url: str) -> None:
    from .support import add_site

    site = add_site(redis_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items()}
    env.update(REDIS_URL=redis_url, WIDGET_DATA_DIR=str(tmp_path), WIDGET_LOG_LEVEL="warning")
    process = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        clients = [Client(f"ws://127.0.0.1:{port}/v1/ws") for _ in range(12)]
        try:
            for c in clients:
                c.hello(site, new_visitor())
                assert c.event("page_view", url="https://shop.test/")["type"] == "ack"
            import redis as redis_sync

            from widget_server.keys import Keys

            r = redis_sync.Redis.from_url(redis_url, decode_responses=True)
            nodes = r.zrangebyscore(Keys().nodes(), time.time() - 120, "+inf")
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            for c in clients:
                c.close()
        assert len({n.rsplit("-", 2)[1] for n in nodes}) >= 2  # two worker pids registered
        assert 'widget_messages_total{type="page_view"} 12.0' in metrics  # summed over workers
    finally:
        process.terminate()
        process.wait(20)
