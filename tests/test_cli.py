"""The widget-server command: clear errors for misconfiguration, sites, embedded Valkey, workers."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from widget_server.cli.main import DEMO_HOLDOUT
from widget_server.offers.assign import assign, in_site_holdout
from widget_server.offers.campaigns import parse_campaign
from widget_server.shipped import EXAMPLES_DIR
from widget_server.store.embedded import free_port

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
    secret = cli("sites", "secret", key, env=env)
    assert secret.returncode == 0 and len(secret.stdout.strip()) >= 40
    assert cli("sites", "secret", "nosuch", env=env).returncode == 2
    listed = cli("sites", "list", env=env)
    assert any(line.split()[:3] == [key, "USD", "en-US"] for line in listed.stdout.splitlines())
    bad = cli("sites", "add", "bad key!", "--origin", "https://x.test", env=env)
    assert bad.returncode == 2 and "key" in bad.stderr
    bad_zone = cli("sites", "add", key + "z", "--origin", "https://x.test", "--timezone",
                   "Mars/Base", env=env)  # fmt: skip
    assert bad_zone.returncode == 2 and "unknown time zone" in bad_zone.stderr
    bad_origin = cli("sites", "add", key + "x", "--origin", "javascript:alert(1)", env=env)
    assert bad_origin.returncode == 2 and "origin" in bad_origin.stderr


def test_sites_frequency_shows_and_sets_the_site_wide_limits(
    tmp_path: Path, redis_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "WIDGET_DATA_DIR": str(tmp_path)}
    key = "cli" + os.urandom(3).hex()
    assert cli("sites", "add", key, "--origin", "https://x.test", env=env).returncode == 0
    shown = cli("sites", "frequency", key, env=env)
    assert shown.returncode == 0
    assert shown.stdout.strip() == (
        f"{key}: Offers: 1 per visit, 2 per day, one discount per 7 days, "
        "live offers: 1 per visit, 2 per day"
    )
    changed = cli("sites", "frequency", key, "--per-session", "2", "--discount-days", "0", env=env)
    assert changed.returncode == 0
    assert "Offers: 2 per visit, 2 per day, any number of discounts" in changed.stdout
    for bad in (["--per-day", "101"], ["--live-per-day", "-1"], ["--per-session", "two"]):
        refused = cli("sites", "frequency", key, *bad, env=env)
        assert refused.returncode == 2 and bad[0] in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) <= 5
    assert "2 per visit" in cli("sites", "frequency", key, env=env).stdout  # unchanged
    missing = cli("sites", "frequency", "nosuch", env=env)
    assert missing.returncode == 2 and "no site 'nosuch'" in missing.stderr
    assert "codes applied by none" in cli("sites", "apply-code", key, env=env).stdout
    shopify = cli("sites", "apply-code", key, "--mode", "shopify", env=env)
    assert shopify.returncode == 0 and "codes applied by shopify" in shopify.stdout
    url = cli("sites", "apply-code", key, "--mode", "url", "--param", "coupon_code", env=env)
    assert "codes applied by url (parameter coupon_code)" in url.stdout
    bad = cli("sites", "apply-code", key, "--param", "no spaces", env=env)
    assert bad.returncode == 2 and "--param" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("sites", "holdout", key, env=env).stdout.strip() == f"{key}: no site-wide holdout"
    held = cli("sites", "holdout", key, "--percent", "5", env=env)
    assert held.returncode == 0, held.stderr
    said = f"{key}: 5% of visitors held out site-wide (no offer, no message), comparison 2 since "
    assert held.stdout.startswith(said)
    for wrong in ("60", "-1", "five"):
        refused = cli("sites", "holdout", key, "--percent", wrong, env=env)
        assert refused.returncode == 2 and "--percent" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert "comparison 2 since" in cli("sites", "holdout", key, env=env).stdout  # unchanged


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
    import redis as redis_sync

    from widget_server.store.keys import Keys

    from .support import add_site

    keys = Keys(prefix="w" + secrets.token_hex(4))  # its own key space: only its nodes count
    site = add_site(redis_url, keys=keys)
    port = free_port()
    env = {k: v for k, v in os.environ.items()}
    env.update(REDIS_URL=redis_url, WIDGET_DATA_DIR=str(tmp_path), WIDGET_LOG_LEVEL="warning",
               WIDGET_REDIS_PREFIX=keys.prefix)  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, cwd=ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    r = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        clients = [Client(f"ws://127.0.0.1:{port}/v1/ws") for _ in range(12)]
        try:
            for c in clients:
                c.hello(site, new_visitor())
                assert c.event("page_view", url="https://shop.test/")["type"] == "ack"
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            for c in clients:
                c.close()
        assert 'widget_messages_total{type="page_view"} 12.0' in metrics  # summed over workers
        deadline = time.monotonic() + 60
        while True:  # both worker processes registered as nodes
            nodes = r.zrangebyscore(keys.nodes(), time.time() - 120, "+inf")
            if len({n.rsplit("-", 2)[1] for n in nodes}) == 2:
                break
            assert time.monotonic() < deadline, f"nodes registered: {nodes}"
            time.sleep(0.2)
    finally:
        r.close()
        process.terminate()
        process.wait(20)


def test_demo_serves_the_shop_with_seeded_campaigns(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(WIDGET_DATA_DIR=str(tmp_path), WIDGET_LOG_LEVEL="warning")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "demo", "--no-traffic", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        home = httpx.get(base + "/demo/")
        assert home.status_code == 200
        assert 'data-site="demo"' in home.text and 'src="/widget.js"' in home.text
        assert httpx.get(base + "/widget.js").status_code == 200
        listed = cli("campaigns", "list", "--site", "demo", env=env)
        assert {"cart-saver", "similar-products", "newsletter", "flash-sale"} <= {
            line.split()[0] for line in listed.stdout.splitlines()[1:]
        }
        examples = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())
        saver = parse_campaign(examples[0])
        visitor = next(
            v
            for v in (new_visitor() for _ in range(100))
            if assign(saver, v) != "holdout" and not in_site_holdout("demo", 1, DEMO_HOLDOUT, v)
        )
        with Client(f"ws://127.0.0.1:{port}/v1/ws", origin=base) as c:
            c.hello("demo", visitor)
            c.event("cart_add", item={"id": "P1001", "price": 45.0})
            assert c.recv_until("arm")["offer"]["campaign"] == "cart-saver"
        # The demo's texts go to its outbox folder: a phone opt-in's code lands there.
        asked = httpx.post(
            f"{base}/v1/sms/optin?site=demo",
            json={"visitor": visitor, "phone": "+491701234567", "consent": True},
        )
        assert asked.json()["status"] == "code_sent", asked.text
        [text] = (tmp_path / "outbox").glob("*.sms.json")
        assert json.loads(text.read_text())["to"] == "+491701234567"
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    banner = out.decode()
    assert f"Demo shop   {base}/demo/" in banner
    assert f"Texts       {(tmp_path / 'outbox').resolve()}" in banner
    # The first run creates the demo's owner and prints its password once; it signs in.
    found = re.search(rf"Admin       {base}/admin/   sign in as (\S+), password (\S+)\n", banner)
    assert found is not None, banner
    email, password = found.groups()
    again = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "demo", "--no-traffic", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(base, again)
        with httpx.Client(base_url=base) as admin:
            form = admin.get("/admin/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', form)
            assert token is not None
            signed = admin.post("/admin/login", data={"csrf": token.group(1), "email": email,
                                                       "password": password})  # fmt: skip
            assert signed.status_code == 303
            assert email in admin.get("/admin/sites").text
    finally:
        again.terminate()
        out, _ = again.communicate(timeout=20)
    assert f"Admin       {base}/admin/   (sign in with your account)" in out.decode()
    assert password not in out.decode()


def test_campaign_import_reports_every_invalid_field(tmp_path: Path, redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "WIDGET_DATA_DIR": str(tmp_path)}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "ok", "name": "ok", "variants": [
        {"key": "a", "offer": {"kind": "message", "headline": "x"}}]},
        {"id": "Bad!", "name": "", "variants": []}]))  # fmt: skip
    result = cli("campaigns", "import", str(bad), "--site", "imp", env=env)
    assert result.returncode == 2
    assert "campaign #2: id:" in result.stderr and "campaign #2: variants:" in result.stderr
    assert "no campaigns on imp" in cli("campaigns", "list", "--site", "imp", env=env).stdout
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"id": "ok", "name": "ok", "variants": [
        {"key": "a", "offer": {"kind": "message", "headline": "x"}}]}))  # fmt: skip
    assert cli("campaigns", "import", str(good), "--site", "imp", env=env).returncode == 0
    assert cli("campaigns", "status", "ok", "active", "--site", "imp", env=env).returncode == 0
    history = cli("campaigns", "history", "ok", "--site", "imp", env=env)
    assert "version 1 replaced" in history.stdout
    exported = json.loads(cli("campaigns", "export", "--site", "imp", env=env).stdout)
    assert exported[0]["status"] == "active" and exported[0]["version"] == 2
    missing = cli("campaigns", "import", str(tmp_path / "nope.json"), "--site", "imp", env=env)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_mail_flows_set_show_and_preview(tmp_path: Path, redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "WIDGET_DATA_DIR": str(tmp_path)}
    shown = json.loads(cli("mail", "flows", "--site", "mailcli", env=env).stdout)
    names = [f["name"] for f in shown["flows"]]  # the defaults; the newer kinds off
    assert names == ["cart", "checkout", "browse", "welcome", "cross_sell", "review",
                     "replenishment", "winback", "price_drop", "back_in_stock", "low_stock",
                     "category_interest"]  # fmt: skip
    assert [f["name"] for f in shown["flows"] if f["enabled"]] == ["cart", "browse"]
    flows = EXAMPLES_DIR / "demo-mail-flows.json"
    saved = cli("mail", "set-flows", str(flows), "--site", "mailcli", env=env)
    count = len(json.loads(flows.read_text())["flows"])
    assert saved.returncode == 0 and f"saved {count} flows" in saved.stdout
    shown = json.loads(cli("mail", "flows", "--site", "mailcli", env=env).stdout)
    assert shown["flows"][0]["steps"][0]["delay_minutes"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"flows": [{"name": "Bad Name", "kind": "cart", "steps": []}]}')
    refused = cli("mail", "set-flows", str(bad), "--site", "mailcli", env=env)
    assert refused.returncode == 2 and "bad.json" in refused.stderr
    preview = cli("mail", "preview", "--site", "mailcli", "--locale", "de", "--out",
                  str(tmp_path / "p"), env=env)  # fmt: skip
    assert preview.returncode == 0, preview.stderr
    assert "subject: Ihr Warenkorb wartet" in preview.stdout
    assert "<html" in (tmp_path / "p" / "cart-1-de.html").read_text().lower()
    missing = cli("mail", "preview", "--site", "mailcli", "--step", "9", env=env)
    assert missing.returncode == 2


def test_processes_starting_together_agree_on_one_secret_key(tmp_path: Path) -> None:
    """Eight processes create the data directory's key at once: one key, complete, mode 0600."""
    code = (
        "import sys; from pathlib import Path; from widget_server.settings import load_secret_key;"
        "print(load_secret_key(Path(sys.argv[1])))"
    )
    data = tmp_path / "data"
    racers = [
        subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE)
        for _ in range(8)
    ]
    keys = {racer.communicate(timeout=60)[0].decode().strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(keys) == 1 and len(keys.pop()) >= 48
    assert [p.name for p in data.iterdir()] == ["secret_key"]  # no drafts left behind
    assert (data / "secret_key").stat().st_mode & 0o777 == 0o600


def test_the_a_a_check_needs_no_server_and_reports_each_rule() -> None:
    done = cli("simulate", "--aa-check", "--runs", "40", "--days", "14", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"A/A check: 40 runs of 14 days, 300 exposures per arm a day at 5\.0% \(seed 3\)\."
        r" Differences called at alpha 0\.05: always-valid rule, read every day, \d+ \([\d.]+%\);"
        r" fixed horizon at 4,200 per arm \d+ \([\d.]+%\); the one-look p-value checked every"
        r" day would have \d+ \([\d.]+%\)\.\n",
        done.stdout,
    ), done.stdout
    for bad in (["--aa-check", "--runs", "0"], ["--aa-check", "--rate", "1.5"], ["--site", "x"]):
        refused = cli("simulate", *bad)
        assert refused.returncode == 2 and refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith("widget-server: error: ")
