"""The same workload on one Valkey and on a Valkey Cluster (3 masters, 3 replicas), two server
nodes each time.

1. Server CPU per message: visitors connected across both nodes send events and exit-intent
   signals in a closed loop (each sends its next message when the previous one is acked; the
   message mix of ``benchmarks/realtime.py``). The CPU time of both server processes over the
   window, read with psutil, divided by the messages acked in it. Rounds alternate between the
   two stores, so that the noise of this shared machine falls on both alike.
2. Live offer fan-out: N sessions spread over both nodes, a live offer started with the engine's
   ``start_live`` (as ``benchmarks/offers.py`` does); the time until the last session has its
   ``offer``. A bare site broadcast is timed the same way as the baseline.
3. Failover recovery (cluster only, a fresh cluster each run): visitors connected on both nodes,
   the master that owns the broadcast channel's slot killed with SIGKILL; the time until every
   visitor's next event is acknowledged (sent again a second after ``unavailable``, as the widget
   does), and until a live offer started at the kill has reached every visitor on both nodes.

Beside them, what the product's store client costs this process per call on each store (one
command; a pipeline of two), the cluster client's share of a node's extra CPU.

The site has the demo's cart saver (a generated code on every exit intent with a cart of 30 or
more, no caps) and its flash sale (live, no caps), as in ``benchmarks/offers.py``. On the cluster
each claim of a code waits for the replica (``WAIT 1``); one Valkey has no replica to wait for.

    python benchmarks/cluster.py [--quick] [--sessions 200] [--fan-out 5000] [--failovers 3]
(``make bench``; ``--quick`` is a smoke test of under a minute)

One JSON object goes to stdout, progress to stderr. Ratios are cluster / single: the product aims
at a server CPU per message at most 1.3 times that of one Valkey (reported, not asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psutil
from redis.exceptions import RedisError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.realtime import (  # noqa: E402
    ORIGIN,
    _close_all,
    _connect,
    _decode,
    _message_plan,
    _raise_fd_limit,
    progress,
)
from tests.support import ServerProcess, add_site, save_campaigns  # noqa: E402
from widget_server.metrics import Metrics  # noqa: E402
from widget_server.offers.campaign_store import CampaignStore  # noqa: E402
from widget_server.offers.engine import OfferEngine  # noqa: E402
from widget_server.realtime.hub import Hub  # noqa: E402
from widget_server.shipped import EXAMPLES_DIR  # noqa: E402
from widget_server.store.client import open_store  # noqa: E402
from widget_server.store.embedded import EmbeddedValkey  # noqa: E402
from widget_server.store.keys import Keys  # noqa: E402
from widget_server.store.local_cluster import ClusterNode, LocalCluster  # noqa: E402
from widget_server.store.scripts import Scripts  # noqa: E402
from widget_server.visitors.sessions import SessionStore  # noqa: E402
from widget_server.wire import protocol as p  # noqa: E402

T = TypeVar("T")
EXAMPLES = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())
SAVER = {**EXAMPLES[0], "holdout": 0.0, "caps": {"per_session": 0, "per_visitor_day": 0}}
FLASH = {key: value for key, value in EXAMPLES[-1].items() if key != "caps"}
LIVE = FLASH["id"]
GOAL_CPU_RATIO = 1.3
RESEND_S = 1.0  # the widget sends a message again a second after ``unavailable``
NODE_ENV = {
    "WIDGET_LOG_LEVEL": "warning",
    "WIDGET_LOG_FORMAT": "json",
    # The load here is intentional: the per-socket rate limit and the per-address connection
    # limit (every client is 127.0.0.1) are raised out of the way.
    "WIDGET_RATE_PER_SECOND": "10000",
    "WIDGET_RATE_BURST": "100000",
    "WIDGET_MAX_CONNECTIONS_PER_IP": "0",
}


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_async(coro: Awaitable[T]) -> T:
    """Run ``coro`` on uvloop when it is installed (as the server does)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


# --- the two stores, each with two server nodes --------------------------------------------------


@dataclass
class Deployment:
    name: str
    store_url: str
    masters: list[int]  # process ids of the Valkey servers that serve slots
    replicas: list[int] = field(default_factory=list)
    site: str = ""
    servers: list[ServerProcess] = field(default_factory=list)

    @property
    def ws_urls(self) -> list[str]:
        return [server.ws_url for server in self.servers]

    def start_nodes(self, node_urls: list[str], folder: Path) -> None:
        """The site with the cart saver and the flash sale, and a server node per URL."""
        self.site = add_site(self.store_url, origins=[ORIGIN])
        save_campaigns(self.store_url, self.site, [SAVER, FLASH])
        for i, url in enumerate(node_urls):
            self.servers.append(ServerProcess(url, folder / f"node{i}", **NODE_ENV).start())

    def stop_nodes(self) -> None:
        for server in self.servers:
            server.stop()
        errors = [
            line
            for server in self.servers
            for line in server.logs().splitlines()
            if '"level": "error"' in line
        ]
        if errors:
            first = errors[0][:400]
            progress(f"{self.name}: {len(errors)} errors in the nodes' logs, first:\n{first}")

    def log_tails(self) -> str:
        return "\n".join(f"--- {s.log_path}\n{s.logs()[-3000:]}" for s in self.servers)


@contextlib.contextmanager
def single_valkey(folder: Path) -> Iterator[Deployment]:
    with EmbeddedValkey(folder, persist=False) as valkey:
        pids = [
            p.pid
            for p in psutil.Process().children()
            if "valkey" in p.name() and str(valkey.port) in " ".join(p.cmdline())
        ]
        deployment = Deployment("single", valkey.url, masters=pids)
        try:
            deployment.start_nodes([valkey.url, valkey.url], folder)
            yield deployment
        finally:
            deployment.stop_nodes()


def _pids(nodes: list[ClusterNode]) -> list[int]:
    return [node.process.pid for node in nodes if node.process is not None]


@contextlib.contextmanager
def valkey_cluster(folder: Path) -> Iterator[Deployment]:
    with LocalCluster(folder / "cluster", persist=False) as cluster:
        masters = cluster.masters()
        replicas = [cluster.replica_of(m) for m in masters]
        deployment = Deployment(
            "cluster", cluster.seed_url, masters=_pids(masters), replicas=_pids(replicas)
        )
        try:
            # Each node is pointed at a different master: either one is enough to find the rest.
            deployment.start_nodes([masters[0].url, masters[1].url], folder)
            yield deployment
        finally:
            deployment.stop_nodes()


# --- clients -------------------------------------------------------------------------------------


async def connect_spread(
    urls: list[str], site: str, count: int, parallel: int = 100, wait_s: float = 60.0
) -> list[Any]:
    """``count`` sessions (hello acknowledged), the i-th on ``urls[i % len(urls)]``."""
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> Any:
        async with gate:
            return await _connect(urls[index % len(urls)], site, index, wait_s)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    sockets = [ws for ws in results if not isinstance(ws, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await _close_all(sockets)
        raise RuntimeError(f"{len(failures)} of {count} sessions did not connect: {failures[0]!r}")
    return sockets


# --- 1. server CPU per message -------------------------------------------------------------------


def _cpu_now(groups: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds of each group of processes (without their children) and of the
    whole machine (``machine``)."""
    machine = psutil.cpu_times()
    out = {"machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)}
    for group, pids in groups.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        out[group] = total
    return out


async def closed_loop(
    deployment: Deployment, sessions: int, warmup: float, duration: float
) -> dict[str, Any]:
    """Each session sends its next message as soon as the previous one is answered; counts the
    acks that arrive in the window and the CPU every process used in it."""
    from websockets.exceptions import ConnectionClosed

    sockets = await connect_spread(deployment.ws_urls, deployment.site, sessions)
    servers = [s.process.pid for s in deployment.servers if s.process is not None]
    groups = {
        "server": servers,
        "store_masters": deployment.masters,
        "store_replicas": deployment.replicas,
        "client": [os.getpid()],
    }
    perf_counter = time.perf_counter
    t0 = perf_counter() + 0.5
    measure_from, stop_at = t0 + warmup, t0 + warmup + duration
    acked = [0] * len(sockets)
    errors: Counter[str] = Counter()

    async def run(index: int, ws: Any) -> None:
        plan = _message_plan(index)
        await asyncio.sleep(max(0.0, t0 - perf_counter()))
        k = 0
        try:
            while perf_counter() < stop_at:
                msg_id = f"c{k}"
                await ws.send(plan[k % len(plan)] + msg_id + '"}')
                k += 1
                while True:
                    answer = _decode(await ws.recv())
                    kind = answer.get("type")
                    if kind == "ack" and msg_id in answer.get("ids", ()):
                        if measure_from <= perf_counter() < stop_at:
                            acked[index] += 1
                        break
                    if kind == "error" and answer.get("id") == msg_id:
                        errors[str(answer.get("code"))] += 1
                        break
        except ConnectionClosed:
            errors["connection_closed"] += 1

    async def cpu_window() -> dict[str, float]:
        await asyncio.sleep(max(0.0, measure_from - perf_counter()))
        before = _cpu_now(groups)
        await asyncio.sleep(max(0.0, stop_at - perf_counter()))
        after = _cpu_now(groups)
        return {group: after[group] - before[group] for group in after}

    cpu = asyncio.create_task(cpu_window())
    try:
        async with asyncio.timeout(warmup + duration + 60):
            await asyncio.gather(*(run(i, ws) for i, ws in enumerate(sockets)))
        used = await cpu
    finally:
        cpu.cancel()
        await _close_all(sockets)
    messages = sum(acked)
    store = used["store_masters"] + used["store_replicas"]
    if not messages:
        raise RuntimeError(f"{deployment.name}: no message acknowledged ({dict(errors)})")
    busy = {group: used[group] / duration for group in groups}
    busy["others"] = max(0.0, used["machine"] / duration - sum(busy.values()))
    return {
        "server_cpu_us_per_msg": round(used["server"] / messages * 1e6, 1),
        "store_cpu_us_per_msg": round(store / messages * 1e6, 1),
        "store_replicas_cpu_us_per_msg": round(used["store_replicas"] / messages * 1e6, 1),
        "msgs_per_s": round(messages / duration, 1),
        "messages": messages,
        "errors": dict(errors),
        "cores_busy": {group: round(value, 2) for group, value in busy.items()},
    }


def cpu_per_message(deployments: list[Deployment], args: argparse.Namespace) -> dict[str, Any]:
    for deployment in deployments:  # one-time costs (caches, the first lookups) off the books
        progress(f"{deployment.name}: warming up")
        run_async(closed_loop(deployment, min(20, args.sessions), 0.0, args.warmup))
    rounds: dict[str, list[dict[str, Any]]] = {d.name: [] for d in deployments}
    for r in range(args.rounds):
        for deployment in deployments if r % 2 == 0 else deployments[::-1]:
            progress(
                f"{deployment.name}: closed loop, {args.sessions} sessions on 2 nodes, "
                f"{args.duration:g} s (round {r + 1} of {args.rounds})"
            )
            result = run_async(closed_loop(deployment, args.sessions, args.warmup, args.duration))
            progress(
                f"{deployment.name}: {result['server_cpu_us_per_msg']} µs server CPU per message, "
                f"{result['msgs_per_s']} msgs/s"
            )
            rounds[deployment.name].append(result)
    out: dict[str, Any] = {}
    for name, results in rounds.items():
        messages = sum(r["messages"] for r in results)
        out[name] = {
            # Over every round: CPU seconds / messages, each round weighted by its messages.
            "server_cpu_us_per_msg": round(
                sum(r["server_cpu_us_per_msg"] * r["messages"] for r in results) / messages, 1
            ),
            "store_cpu_us_per_msg": round(
                sum(r["store_cpu_us_per_msg"] * r["messages"] for r in results) / messages, 1
            ),
            "store_replicas_cpu_us_per_msg": round(
                sum(r["store_replicas_cpu_us_per_msg"] * r["messages"] for r in results) / messages,
                1,
            ),
            "msgs_per_s": round(statistics.mean(r["msgs_per_s"] for r in results), 1),
            "rounds": results,
        }
    single, cluster = out["single"], out["cluster"]
    out["ratio_server_cpu"] = round(
        cluster["server_cpu_us_per_msg"] / single["server_cpu_us_per_msg"], 3
    )
    out["ratio_store_cpu"] = round(
        cluster["store_cpu_us_per_msg"] / single["store_cpu_us_per_msg"], 3
    )
    out["ratio_msgs_per_s"] = round(cluster["msgs_per_s"] / single["msgs_per_s"], 3)
    out["goal_ratio_server_cpu_at_most"] = GOAL_CPU_RATIO
    return out


async def _store_calls(url: str, calls: int) -> dict[str, float]:
    """This process's CPU per call through the product's store client (``open_store``), 20
    calls in flight: one command, and a pipeline of two (as a session update with its expiry)."""
    client = open_store(url)
    key = "{bench}:calls"

    async def commands(n: int) -> None:
        for _ in range(n):
            await client.hget(key, "f")

    async def pipelines(n: int) -> None:
        for _ in range(n):
            async with client.pipeline(transaction=False) as pipe:
                pipe.hget(key, "f")
                pipe.expire(key, 60)
                await pipe.execute()

    out: dict[str, float] = {}
    try:
        await client.hset(key, "f", "v")
        for name, work in (("command", commands), ("pipeline_of_2", pipelines)):
            await asyncio.gather(*(work(max(1, calls // 200)) for _ in range(20)))  # warm up
            started = time.process_time()
            await asyncio.gather(*(work(calls // 20) for _ in range(20)))
            out[f"{name}_cpu_us"] = (time.process_time() - started) / (calls // 20 * 20) * 1e6
    finally:
        await client.aclose()
    return out


def store_client(deployments: list[Deployment], calls: int, repeats: int = 3) -> dict[str, Any]:
    """Where a node's extra CPU on a cluster can come from: the cluster client's own cost per
    call. Alternating runs; the least disturbed (lowest) of each is kept."""
    progress(f"store client: {calls} commands and {calls} pipelines per run")
    seen: dict[str, list[dict[str, float]]] = {d.name: [] for d in deployments}
    for _ in range(repeats):
        for deployment in deployments:
            seen[deployment.name].append(run_async(_store_calls(deployment.store_url, calls)))
    out: dict[str, Any] = {
        name: {key: round(min(run[key] for run in runs), 1) for key in runs[0]}
        for name, runs in seen.items()
    }
    for key in out["single"]:
        out[f"ratio_{key.removesuffix('_cpu_us')}"] = round(
            out["cluster"][key] / out["single"][key], 3
        )
    return out


# --- 2. live offer fan-out -----------------------------------------------------------------------


def _engine(client: Any) -> OfferEngine:
    keys, scripts = Keys(), Scripts.of(client)
    sessions = SessionStore(
        client, scripts, keys, session_ttl_s=1800, profile_ttl_s=86400, presence_ttl_s=90
    )
    return OfferEngine(client, scripts, keys, CampaignStore(client, keys), sessions, Metrics())


async def _time_until_all(
    sockets: list[Any], kind: str, start: Callable[[], Awaitable[Any]], limit_s: float
) -> float:
    """Seconds from calling ``start`` until every socket has received a message of ``kind``
    (a ``withdraw``: the ping's)."""

    def awaited(message: dict[str, Any]) -> bool:
        if message.get("type") != kind:
            return False
        return kind != "withdraw" or message.get("offer") == PING.offer

    async def wait_one(ws: Any) -> None:
        while not awaited(_decode(await ws.recv())):
            pass

    waiters = [asyncio.create_task(wait_one(ws)) for ws in sockets]
    await asyncio.sleep(0)
    started = time.perf_counter()
    try:
        await start()
        await asyncio.wait_for(asyncio.gather(*waiters), limit_s)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return time.perf_counter() - started


# The bare broadcast: a push that names no offer, the cheapest there is.
PING = p.Withdraw(offer="ping-all")


async def fan_out(deployment: Deployment, sessions: int) -> dict[str, Any]:
    progress(f"{deployment.name}: opening {sessions} sessions on 2 nodes")
    started = time.perf_counter()
    sockets = await connect_spread(deployment.ws_urls, deployment.site, sessions, parallel=200)
    connect_s = time.perf_counter() - started
    client = open_store(deployment.store_url)
    hub = Hub(client, Keys(), Metrics(), presence_ttl_s=90, on_site_changed=lambda _: None)
    engine = _engine(client)
    site = deployment.site
    try:
        await asyncio.sleep(1.0)  # let the nodes finish what the hellos started (arming)
        progress(f"{deployment.name}: bare broadcast")
        bare = await _time_until_all(sockets, "withdraw", lambda: hub.broadcast(site, PING), 120)
        progress(f"{deployment.name}: live offer (a decision and an atomic claim per session)")
        live = await _time_until_all(
            sockets, "offer", lambda: engine.start_live(site, LIVE, 5), 300
        )
        progress(f"{deployment.name}: live offer to {sessions} sessions in {live:.2f} s")
    finally:
        await client.aclose()
        await _close_all(sockets)
    return {
        "sessions": len(sockets),
        "connect_s": round(connect_s, 2),
        "live_offer_s": round(live, 3),
        "bare_broadcast_s": round(bare, 3),
    }


# --- 3. failover recovery ------------------------------------------------------------------------


def _is_live(message: dict[str, Any]) -> bool:
    return str(message.get("offer", {}).get("id", "")).startswith(f"{LIVE}.")


class Visitor:
    """One widget: a socket whose answers are matched to message ids; records its live offer."""

    def __init__(self, ws: Any, node: int) -> None:
        self.ws, self.node = ws, node
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.live_at: float | None = None
        self.live = asyncio.Event()
        self.closed: str | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                message = _decode(raw)
                kind = message.get("type")
                if kind == "ack":
                    for msg_id in message.get("ids", ()):
                        self._answer(msg_id, message)
                elif kind == "error" and message.get("id"):
                    self._answer(str(message["id"]), message)
                elif kind == "offer" and self.live_at is None and _is_live(message):
                    self.live_at = time.perf_counter()
                    self.live.set()
        except ConnectionClosed as exc:
            self.closed = f"closed {exc.rcvd.code if exc.rcvd else ''}"

    def _answer(self, msg_id: str, message: dict[str, Any]) -> None:
        future = self.waiting.pop(msg_id, None)
        if future is not None and not future.done():
            future.set_result(message)

    async def ask(self, message: dict[str, Any], wait_s: float) -> dict[str, Any] | None:
        """Send ``message`` (with its id); its ack or error, or None without one in time."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[message["id"]] = future
        await self.ws.send(json.dumps(message))
        try:
            return await asyncio.wait_for(future, wait_s)
        except TimeoutError:
            self.waiting.pop(message["id"], None)
            return None

    async def until_acked(self, message: dict[str, Any], limit_s: float) -> tuple[int, int]:
        """Send ``message`` until it is acknowledged, again ``RESEND_S`` after each
        ``unavailable`` (or an answer that never came); returns (unavailable, no answer)."""
        deadline = time.perf_counter() + limit_s
        unavailable = silent = 0
        while time.perf_counter() < deadline:
            answer = await self.ask(message, wait_s=10.0)
            if answer is not None and answer.get("type") == "ack":
                return unavailable, silent
            if answer is None:
                silent += 1
            elif answer.get("code") == "unavailable":
                unavailable += 1
            else:
                raise RuntimeError(f"event refused: {answer}")
            await asyncio.sleep(RESEND_S)
        raise RuntimeError(f"an event was not acknowledged within {limit_s:g} s of the kill")


async def _failover(
    cluster: LocalCluster, victim: ClusterNode, deployment: Deployment, visitors_n: int
) -> dict[str, Any]:
    sockets = await connect_spread(deployment.ws_urls, deployment.site, visitors_n)
    visitors = [Visitor(ws, i % 2) for i, ws in enumerate(sockets)]
    client = open_store(deployment.store_url)
    engine = _engine(client)
    limit_s = 60.0

    def event(i: int, n: int) -> dict[str, Any]:
        url = f"{ORIGIN}/p/{n}"
        return {"id": f"e{n}", "type": "event", "name": "page_view", "url": url}

    try:
        for i, v in enumerate(visitors):  # everyone served before the kill
            answer = await v.ask(event(i, 1), wait_s=10)
            assert answer is not None and answer["type"] == "ack", answer
        await asyncio.sleep(0.5)

        killed = time.perf_counter()
        cluster.kill(victim)

        async def promoted() -> float:
            await asyncio.to_thread(cluster.wait_for_failover, victim, limit_s)
            return time.perf_counter() - killed

        async def served(v: Visitor, i: int) -> tuple[float, int, int]:
            unavailable, silent = await v.until_acked(event(i, 2), limit_s)
            return time.perf_counter() - killed, unavailable, silent

        async def live() -> tuple[float, float, int]:
            tries = 0
            while True:
                tries += 1
                try:
                    await asyncio.wait_for(engine.start_live(deployment.site, LIVE, 5), 5)
                    break
                except (RedisError, OSError, TimeoutError):
                    if time.perf_counter() - killed > limit_s:
                        raise
                    await asyncio.sleep(0.2)
            started = time.perf_counter() - killed
            async with asyncio.timeout(limit_s):
                await asyncio.gather(*(v.live.wait() for v in visitors))
            last = max(v.live_at or 0.0 for v in visitors) - killed
            return started, last, tries

        promoted_task = asyncio.create_task(promoted())
        live_task = asyncio.create_task(live())
        answers = await asyncio.gather(*(served(v, i) for i, v in enumerate(visitors)))
        live_started, live_everywhere, live_tries = await live_task
        promoted_s = await promoted_task
    finally:
        await client.aclose()
        for v in visitors:
            v.reader.cancel()
        await _close_all(sockets)
    closed = [v.closed for v in visitors if v.closed]
    per_node = [max(v.live_at or 0.0 for v in visitors if v.node == n) - killed for n in (0, 1)]
    return {
        "visitors": len(visitors),
        "replica_promoted_s": round(promoted_s, 2),
        "events_acked_again_s": round(max(t for t, _, _ in answers), 2),
        "visitors_refused": sum(1 for _, u, s in answers if u or s),
        "unavailable_answers": sum(u for _, u, _ in answers),
        "unanswered": sum(s for _, _, s in answers),
        "live_offer_accepted_s": round(live_started, 2),
        "live_start_tries": live_tries,
        "live_offer_every_visitor_s": round(live_everywhere, 2),
        "live_offer_per_node_s": [round(t, 2) for t in per_node],
        "sockets_closed": len(closed),
    }


def failover_run(folder: Path, index: int, visitors: int) -> dict[str, Any]:
    with LocalCluster(folder / f"failover-{index}" / "cluster", persist=False) as cluster:
        victim = cluster.master_of(Keys().broadcast_channel())
        others = [m for m in cluster.masters() if m is not victim]
        deployment = Deployment("cluster", others[0].url, masters=_pids(cluster.masters()))
        try:
            deployment.start_nodes([m.url for m in others], folder / f"failover-{index}")
            progress(f"failover {index + 1}: {visitors} visitors, killing {victim.name}")
            result = run_async(_failover(cluster, victim, deployment, visitors))
        except BaseException:
            progress(deployment.log_tails())
            raise
        finally:
            deployment.stop_nodes()
    progress(
        f"failover {index + 1}: promoted {result['replica_promoted_s']} s, every event acked "
        f"{result['events_acked_again_s']} s, live offer everywhere "
        f"{result['live_offer_every_visitor_s']} s after the kill"
    )
    return result


def failovers(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs = [failover_run(folder, i, args.failover_visitors) for i in range(args.failovers)]
    keys = (
        "replica_promoted_s",
        "events_acked_again_s",
        "live_offer_accepted_s",
        "live_offer_every_visitor_s",
    )
    return {
        "killed": "the master that owns the broadcast channel's slot (SIGKILL)",
        "cluster_node_timeout_ms": 2000,
        "resend_after_unavailable_s": RESEND_S,
        "runs": runs,
        "median": {key: round(statistics.median(r[key] for r in runs), 2) for key in keys},
    }


# --- the benchmark -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    _raise_fd_limit(2 * args.fan_out + 2048)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="widget-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.ExitStack() as stack:
            progress("starting one Valkey and a 3+3 cluster, two server nodes on each")
            deployments = [
                stack.enter_context(single_valkey(tmp / "single")),
                stack.enter_context(valkey_cluster(tmp / "cluster")),
            ]
            try:
                result["cpu_per_message"] = cpu_per_message(deployments, args)
                result["store_client"] = store_client(deployments, args.calls)
                fan: dict[str, Any] = {}
                for deployment in deployments:
                    fan[deployment.name] = run_async(fan_out(deployment, args.fan_out))
                fan["ratio_live_offer"] = round(
                    fan["cluster"]["live_offer_s"] / fan["single"]["live_offer_s"], 3
                )
                fan["ratio_bare_broadcast"] = round(
                    fan["cluster"]["bare_broadcast_s"] / fan["single"]["bare_broadcast_s"], 3
                )
                result["fan_out"] = fan
            except BaseException:
                for deployment in deployments:
                    progress(deployment.log_tails())
                raise
        result["failover"] = failovers(tmp, args)
    result["config"] = {
        "sessions": args.sessions,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "store_client_calls": args.calls,
        "fan_out_sessions": args.fan_out,
        "failovers": args.failovers,
        "failover_visitors": args.failover_visitors,
        "server_nodes": 2,
        "cluster": "3 masters + 3 replicas, cluster-node-timeout 2000 ms, no persistence",
        "single": "one Valkey, no replica, no persistence",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="closed-loop sessions")
    parser.add_argument("--duration", type=float, default=5.0, help="closed-loop seconds a round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds a round")
    parser.add_argument("--rounds", type=int, default=3, help="closed-loop rounds per store")
    parser.add_argument("--fan-out", type=int, default=5000, help="sessions for the live offer")
    parser.add_argument("--failovers", type=int, default=3, help="failover runs, fresh clusters")
    parser.add_argument("--failover-visitors", type=int, default=200, help="visitors per run")
    parser.add_argument("--calls", type=int, default=20000, help="store client calls per run")
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.duration, args.warmup, args.rounds = 20, 1.5, 0.3, 1
        args.fan_out, args.failovers, args.failover_visitors = 200, 1, 20
        args.calls = 2000
    counts = (args.sessions, args.rounds, args.fan_out, args.failovers, args.failover_visitors)
    if min(counts) < 1 or args.calls < 20:
        parser.error("counts must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_sigterm)
    try:
        result = run(args)
    except KeyboardInterrupt:
        progress("interrupted; everything stopped")
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
