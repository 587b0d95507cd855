"""The product on a Valkey cluster of 3 masters and 3 replicas: the command line, two server nodes,
visitors, offers with unique codes, live offers across nodes, erasure on every master."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from widget_server.store.keys import Keys
from widget_server.store.local_cluster import LocalCluster

from ..devtools.test_simulate import CAMPAIGN, ORIGIN, campaign_data, rows
from ..mail.test_e2e import leave_with_a_cart, wait_for
from ..mail_support import address_for, isolated_shop
from ..sms.test_e2e import erased_links_answer_as_unknown
from ..sms_support import FakeMessagesApi
from ..support import (
    ROOT,
    Client,
    ServerProcess,
    add_site,
    codes_unreplicated,
    discount_campaign,
    message_campaign,
    new_visitor,
    save_campaigns,
)
from ..test_cli import cli as run_cli
from ..test_cli import wait_ready

pytestmark = pytest.mark.cluster
EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}


def cli(url: str, data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``widget-server ARGS`` on the store at ``url``."""
    store = {"REDIS_URL": url, "WIDGET_DATA_DIR": str(data_dir), **env}
    return run_cli(*args, env=store, timeout=60)


@pytest.fixture(scope="module")
def nodes(
    valkey_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server nodes on the cluster, each pointed at a different master."""
    masters = valkey_cluster.masters()
    first = ServerProcess(masters[0].url, tmp_path_factory.mktemp("node-a")).start()
    try:
        second = ServerProcess(masters[1].url, tmp_path_factory.mktemp("node-b")).start()
    except BaseException:
        first.stop()
        raise
    yield first, second
    second.stop()
    first.stop()


@pytest.fixture
def cluster(valkey_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(valkey_cluster.seed_url, decode_responses=True)
    yield client
    client.close()


def visitor_keys(valkey_cluster: LocalCluster, site: str, visitor: str) -> list[str]:
    """Every key on every master that names the visitor."""
    found: list[str] = []
    for master in valkey_cluster.masters():
        client = redis.Redis.from_url(master.url, decode_responses=True)
        try:
            found += [k for k in client.scan_iter(match=f"*{visitor}*", count=1000)]
        finally:
            client.close()
    return found


def test_the_command_line_works_on_any_node(valkey_cluster: LocalCluster, tmp_path: Path) -> None:
    for node in valkey_cluster.masters():
        done = cli(
            node.url, tmp_path, "sites", "add", f"s{node.port}", "--origin", "https://a.test"
        )
        assert done.returncode == 0, done.stderr
    done = cli(valkey_cluster.seed_url, tmp_path, "sites", "list")
    assert done.returncode == 0, done.stderr
    for node in valkey_cluster.masters():
        assert f"s{node.port}" in done.stdout


def test_forcing_the_wrong_mode_is_one_line(valkey_cluster: LocalCluster, tmp_path: Path) -> None:
    done = cli(valkey_cluster.seed_url, tmp_path, "sites", "list", WIDGET_REDIS_MODE="single")
    assert done.returncode == 2
    assert "cluster node" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_visitors_get_unique_codes_on_both_nodes(
    valkey_cluster: LocalCluster, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    site = add_site(valkey_cluster.seed_url)
    save_campaigns(valkey_cluster.seed_url, site, [discount_campaign("exit10")])
    codes = []
    for node in nodes * 3:
        with Client(node.ws_url) as c:
            assert c.hello(site, new_visitor())["type"] == "welcome"
            assert c.event("page_view", url="https://shop.test/p/1")["type"] == "ack"
            offer = c.signal_answer(EXIT)
            assert offer is not None, "no offer on a cluster"
            codes.append(offer["code"])
            # Before the visitor saw the code, the replica had it: a failover cannot hand it out
            # again.
            assert offer["code"] in on_replica(valkey_cluster, Keys().issued_codes(site, "exit10"))
    assert len(set(codes)) == len(codes) == 6


def on_replica(cluster: LocalCluster, key: str) -> set[str]:
    """The fields of hash ``key`` as the replica of its master has them now."""
    master = cluster.master_of(key)
    replica = redis.Redis.from_url(cluster.replica_of(master).url, decode_responses=True)
    try:
        replica.execute_command("READONLY")
        return set(replica.hkeys(key))
    finally:
        replica.close()


def test_a_visitor_resumes_on_the_other_node(
    valkey_cluster: LocalCluster, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    site = add_site(valkey_cluster.seed_url)
    visitor = new_visitor()
    with Client(nodes[0].ws_url) as c:
        session = c.hello(site, visitor)["session"]
        assert c.event("cart_add", item={"id": "P1", "price": 10.0, "quantity": 2})["type"] == "ack"
    with Client(nodes[1].ws_url) as c:
        welcome = c.hello(site, visitor, session)
        assert welcome["resumed"] is True and welcome["session"] == session


def test_erasure_leaves_no_key_on_any_master(
    valkey_cluster: LocalCluster, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    site = add_site(valkey_cluster.seed_url)
    save_campaigns(valkey_cluster.seed_url, site, [discount_campaign("erase10")])
    visitor = new_visitor()
    with Client(nodes[0].ws_url) as c:
        c.hello(site, visitor)
        c.event("page_view", url="https://shop.test/p/1")
        assert c.signal_answer(EXIT)
    assert visitor_keys(valkey_cluster, site, visitor)
    with Client(nodes[1].ws_url) as c:
        c.hello(site, visitor)
        msg_id = c.send({"type": "consent", "analytics": False, "marketing": False})
        assert c.answer(msg_id)["type"] == "ack"
    left = visitor_keys(valkey_cluster, site, visitor)
    assert not left, json.dumps(left)


def test_campaign_import_and_an_ab_run_whose_report_counts_match(
    valkey_cluster: LocalCluster, nodes: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    url = valkey_cluster.seed_url
    site = add_site(url)
    feed = tmp_path / "campaigns.json"
    feed.write_text(json.dumps([campaign_data()]))
    done = cli(url, tmp_path, "campaigns", "import", str(feed), "--site", site)
    assert done.returncode == 0, done.stderr
    reached = {}
    for seed, node in enumerate(nodes, start=3):
        done = cli(url, tmp_path, "simulate", "--site", site, "--campaign", CAMPAIGN,
                   "--visitors", "60", "--seed", str(seed), "--server", f"127.0.0.1:{node.port}",
                   "--origin", ORIGIN)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "60 reached exit intent, 0 dropped after hello, 0 failed" in done.stdout
        for line in done.stdout.splitlines()[2:5]:
            arm, count = line.split()[:2]
            reached[arm] = reached.get(arm, 0) + int(count)
    done = cli(url, tmp_path, "report", CAMPAIGN, "--site", site, "--json")
    assert done.returncode == 0, done.stderr
    exposures = {arm: row["exposures"] for arm, row in rows(json.loads(done.stdout)).items()}
    assert sum(reached.values()) == 120
    assert exposures == reached


def test_a_live_offer_reaches_visitors_on_both_nodes(
    valkey_cluster: LocalCluster, nodes: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    url = valkey_cluster.seed_url
    site = add_site(url)
    save_campaigns(
        url, site, [message_campaign("flash", trigger={"exit_intent": [], "live": True})]
    )
    visitors = [Client(node.ws_url) for node in nodes]
    try:
        for c in visitors:
            c.hello(site, new_visitor())
        done = cli(url, tmp_path, "live", "start", "flash", "--site", site, "--minutes", "5")
        assert done.returncode == 0, done.stderr
        for c in visitors:
            assert c.recv_until("offer", timeout=10)["offer"]["id"] == "flash.a"
    finally:
        for c in visitors:
            c.close()


def test_a_visitor_who_leaves_gets_one_email(valkey_cluster: LocalCluster, tmp_path: Path) -> None:
    with isolated_shop(valkey_cluster.seed_url, tmp_path) as shop:
        site = shop.site_with_fast_flows(delay_s=0.5)
        leave_with_a_cart(shop.server, site, new_visitor(), address_for(site, "leaver"))
        assert wait_for(lambda: shop.sink.received, timeout=30)
        assert shop.sink.received[0].message["To"] == address_for(site, "leaver")


def test_erasure_deletes_sms_links_on_their_own_slots(
    valkey_cluster: LocalCluster, tmp_path: Path
) -> None:
    with (
        FakeMessagesApi() as api,
        isolated_shop(valkey_cluster.seed_url, tmp_path, extra_env=api.env()) as shop,
    ):
        store = RedisCluster.from_url(valkey_cluster.seed_url)
        try:
            erased_links_answer_as_unknown(shop, api, store)
        finally:
            store.close()


def test_service_resumes_after_a_master_fails_over(tmp_path: Path) -> None:
    """A cluster of this test's own: the master that carries the nodes' broadcast channel is
    killed; its replica takes over and both nodes serve again without a restart: every event
    acknowledged, a live offer heard on both nodes, every code unique."""
    with LocalCluster(tmp_path / "cluster") as cluster:
        victim = cluster.master_of(Keys().broadcast_channel())
        others = [m for m in cluster.masters() if m is not victim]
        url = others[0].url
        site = add_site(url)
        live = message_campaign("flash", trigger={"exit_intent": [], "live": True})
        save_campaigns(url, site, [discount_campaign("fo10"), live])
        a = ServerProcess(url, tmp_path / "a").start()
        b = ServerProcess(others[1].url, tmp_path / "b").start()
        visitors = [Client(node.ws_url) for node in (a, b) * 4]
        try:
            for c in visitors:
                c.hello(site, new_visitor())
                assert c.event("page_view", url="https://shop.test/p/1")["type"] == "ack"
            killed = time.monotonic()
            cluster.kill(victim)
            pending = set(range(len(visitors)))
            while pending:  # what a widget does: send again until acknowledged
                assert time.monotonic() - killed < 60, f"{len(pending)} visitors never served"
                for i in sorted(pending):
                    answer = visitors[i].event("cart_add", item={"id": f"P{i}", "price": 5.0})
                    if answer["type"] == "ack":
                        pending.discard(i)
                    else:
                        assert answer["code"] == "unavailable", answer
                time.sleep(0.1)
            recovered = time.monotonic() - killed
            # The visitors' slots may be served before the broadcast channel's replica is
            # promoted: until then the command fails with one line, as it would for an operator.
            while True:
                done = cli(url, tmp_path, "live", "start", "flash", "--site", site,
                           "--minutes", "5")  # fmt: skip
                if done.returncode == 0 or time.monotonic() - killed > 60:
                    break
                assert "the store refused or failed" in done.stderr, done.stderr
                time.sleep(0.5)
            assert done.returncode == 0, done.stderr
            for c in visitors:
                assert c.recv_until("offer", timeout=15)["offer"]["id"] == "flash.a"
            codes = []
            for c in visitors:
                offer = c.signal_answer(
                    {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
                )
                assert offer is not None
                codes.append(offer["code"])
            assert len(set(codes)) == len(codes)
            print(f"\nfailover: every visitor served again {recovered:.1f} s after the kill")
        finally:
            for c in visitors:
                c.close()
            b.stop()
            a.stop()


def test_a_code_a_replica_has_not_acknowledged_is_counted(tmp_path: Path) -> None:
    """With the campaign's replica stopped, the claim waits for it in vain: the code is shown
    and counted in ``widget_codes_unreplicated_total``; with the replica back, nothing is. (A
    long node timeout: the stopped replica must not be declared failed meanwhile, or there would
    be no replica to wait for.)"""
    with LocalCluster(tmp_path / "cluster", node_timeout_ms=60_000) as cluster:
        url = cluster.seed_url
        site = add_site(url)
        save_campaigns(url, site, [discount_campaign("rep10")])
        master = cluster.master_of(Keys().issued_codes(site, "rep10"))
        replica = cluster.replica_of(master)
        node = ServerProcess(url, tmp_path / "node").start()
        try:
            assert replica.process is not None
            replica.process.send_signal(signal.SIGSTOP)
            try:
                with Client(node.ws_url) as c:
                    c.hello(site, new_visitor())
                    assert c.signal_answer(EXIT) is not None
            finally:
                replica.process.send_signal(signal.SIGCONT)
            assert codes_unreplicated(node) == 1
            with Client(node.ws_url) as c:
                c.hello(site, new_visitor())
                offer = c.signal_answer(EXIT)
                assert offer is not None
                assert offer["code"] in on_replica(cluster, Keys().issued_codes(site, "rep10"))
            assert codes_unreplicated(node) == 1
        finally:
            node.stop()


def test_the_demo_runs_on_a_fresh_cluster_with_two_nodes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(WIDGET_DATA_DIR=str(tmp_path), WIDGET_LOG_LEVEL="warning")
    port = free_pair_below_ephemeral()
    errors = (tmp_path / "demo.err").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "demo", "--cluster", "--no-traffic",
         "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors,
    )  # fmt: skip
    bases = [f"http://127.0.0.1:{p}" for p in (port, port + 1)]
    try:
        for base in bases:
            try:
                wait_ready(base, process, timeout=90)
            except AssertionError as exc:  # say why it stopped
                raise AssertionError((tmp_path / "demo.err").read_text()[-2000:]) from exc
            assert 'data-site="demo"' in httpx.get(base + "/demo/").text
        visitor = new_visitor()
        with Client(f"ws://127.0.0.1:{port + 1}/v1/ws", origin=bases[1]) as c:
            session = c.hello("demo", visitor)["session"]
        with Client(f"ws://127.0.0.1:{port}/v1/ws", origin=bases[0]) as c:
            assert c.hello("demo", visitor, session)["resumed"] is True
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=60)
        errors.close()
    text = out.decode()
    assert "widget-server demo on a Valkey cluster" in text
    masters = text.split("3 masters (")[1].split(")")[0].split(", ")
    for address in masters:  # the cluster stopped with the demo
        host, _, node_port = address.rpartition(":")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=host, port=int(node_port), socket_connect_timeout=1).ping()
    assert not list(tmp_path.glob("cluster-*"))


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_pair_below_ephemeral() -> int:
    """A port whose next one is free too, below the range the system hands out for port 0
    (every other test's servers and the demo's own cluster take theirs from that range, so
    nothing takes either before the demo binds them)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    rng = random.Random()
    while True:
        port = rng.randrange(max(1024, low - 12_000), low - 2)
        if port_is_free(port) and port_is_free(port + 1):
            return port
