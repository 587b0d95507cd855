"""One Valkey with a replica: a claim that hands out a unique code waits until the replica has it,
and a code shown without that is counted."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from widget_server.store.embedded import EmbeddedValkey, free_port, valkey_binary
from widget_server.store.keys import Keys

from ..support import (
    Client,
    add_site,
    codes_unreplicated,
    discount_campaign,
    new_visitor,
    running_server,
    save_campaigns,
)

EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}


@pytest.fixture
def primary_and_replica(
    tmp_path: Path,
) -> Iterator[tuple[EmbeddedValkey, subprocess.Popen[bytes], int]]:
    primary = EmbeddedValkey(tmp_path / "primary", persist=False)
    primary.start()
    port = free_port()
    (tmp_path / "replica").mkdir()
    replica = subprocess.Popen(
        [str(valkey_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path / "replica"),
         "--replicaof", "127.0.0.1", str(primary.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis.from_url(primary.url, decode_responses=True)
        deadline = time.monotonic() + 20
        while client.info("replication").get("slave0", {}).get("state") != "online":
            assert time.monotonic() < deadline, "the replica never caught up"
            time.sleep(0.1)
        client.close()
        yield primary, replica, port
    finally:
        replica.send_signal(signal.SIGCONT)
        replica.kill()
        replica.wait(10)
        primary.stop()


def issued_on_replica(port: int, site: str, campaign: str) -> set[str]:
    client = redis.Redis(port=port, decode_responses=True)
    try:
        return set(client.hkeys(Keys().issued_codes(site, campaign)))
    finally:
        client.close()


def test_a_code_is_on_the_replica_before_the_visitor_sees_it(
    primary_and_replica: tuple[EmbeddedValkey, subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    primary, replica, port = primary_and_replica
    site = add_site(primary.url)
    save_campaigns(primary.url, site, [discount_campaign("rep")])
    with running_server(primary.url, tmp_path / "node") as node:
        for _ in range(3):
            with Client(node.ws_url) as c:
                c.hello(site, new_visitor())
                offer = c.signal_answer(EXIT)
                assert offer is not None
                assert offer["code"] in issued_on_replica(port, site, "rep")
        assert codes_unreplicated(node) == 0
        replica.send_signal(signal.SIGSTOP)  # connected, but acknowledges nothing
        try:
            with Client(node.ws_url) as c:
                c.hello(site, new_visitor())
                assert c.signal_answer(EXIT) is not None
        finally:
            replica.send_signal(signal.SIGCONT)
        assert codes_unreplicated(node) == 1
