"""Benchmark of the visitor WebSocket (``/v1/ws``) against a bare Starlette echo baseline.

For each server (the real ``widget-server serve`` on an embedded Valkey, then
``benchmarks/echo_app.py``) it measures:

* idle memory: RSS growth of the server process (and its children) per connection that sent
  ``hello`` and then stays idle;
* latency at a fixed rate (open loop): every session sends on its own schedule, whatever the
  answers, and the event -> ack round trip is measured per message id (p50/p95/p99);
* maximum throughput (closed loop): each session sends its next message as soon as the previous
  one is acked.

Next to each rate, ``*_cpu`` gives the cores each process used during the measurement window
(``others``: the rest of the machine, i.e. the noise from other work) and the server's CPU time
per message, which is far less sensitive to that noise than rates and latencies are.

Run ``.venv/bin/python benchmarks/realtime.py`` (``make bench``); ``--quick`` is a smoke test.
One JSON object goes to stdout, progress to stderr. Everything listens on and connects to
127.0.0.1 only, every phase is bounded in time, and every process started here is stopped on exit,
on Ctrl+C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import multiprocessing
import os
import platform
import random
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import psutil
from redis.asyncio import Redis

from widget_server.store.embedded import EmbeddedValkey, free_port
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry, new_site

ROOT = Path(__file__).resolve().parent.parent
ECHO_APP = Path(__file__).resolve().parent / "echo_app.py"
ORIGIN = "https://shop.test"
# Against the echo app measured in the same run: messages/s and CPU per message at least 0.4 of
# the echo's, p99 at 1,000 msgs/s at most 1.5x the echo's, idle memory at most 1.1x.
TARGETS = {"ratio": 0.4, "cpu_ratio": 0.4, "p99_over_echo": 1.5, "rss_over_echo": 1.1}

_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- process plumbing ----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this process when its parent dies, so that a
    benchmark killed with SIGKILL does not leave servers behind. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (children inherit it). Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _http_ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class ServerUnderTest:
    """A server child process on 127.0.0.1 with a ``/readyz`` endpoint."""

    name: str
    command: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    cpus: set[int] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self, timeout: float = 30.0) -> ServerUnderTest:
        cpus = self.cpus

        def child_setup() -> None:
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)  # inherited by uvicorn workers, if any

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                preexec_fn=child_setup,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            if _http_ready(f"http://127.0.0.1:{self.port}/readyz"):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout:g} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def rss_bytes(self) -> int:
        """RSS of the server process and all its children (uvicorn workers)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def settled_rss(self, samples: int = 5, interval: float = 0.2) -> int:
        """Median of a few RSS samples (the event loop may still be freeing or allocating)."""
        values = []
        for _ in range(samples):
            values.append(self.rss_bytes())
            time.sleep(interval)
        return sorted(values)[len(values) // 2]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def create_site(redis_url: str) -> str:
    """Save a fresh site whose allowed origin is ORIGIN; return its key."""
    key = "bench" + secrets.token_hex(4)

    async def save() -> None:
        client = Redis.from_url(redis_url)
        try:
            await SiteRegistry(client, Keys()).save(new_site(key, origins=[ORIGIN]))
        finally:
            await client.aclose()

    asyncio.run(save())
    return key


# --- load generator (runs in its own process) ----------------------------------------------------
#
# The generator is a separate process started with multiprocessing (spawn), not a task in this
# one: the orchestrator polls psutil, waits on subprocesses and handles signals, and none of that
# should delay the generator's timers or the reading of acks. With two or more CPUs and a single
# server worker, the server is also pinned to one CPU and this process, the generator and Valkey
# to the others (--no-pin turns it off), so that the Python client, which costs about as much CPU
# per message as the server, does not compete with the server's event loop for its core. On a
# 2-core machine the generator and Valkey share the second core: the closed-loop numbers are then
# bounded by whichever of server, or generator plus Valkey, saturates first; the echo baseline
# runs under exactly the same arrangement, so the ratio stays comparable.

_decode = msgspec.json.Decoder().decode


def _body(message: dict[str, Any]) -> str:
    """The compact JSON of ``message`` up to the id's value: a frame is ``body + id + '"}'``."""
    return json.dumps(message, separators=(",", ":"))[:-1] + ',"id":"'


_BODIES: dict[str, list[str]] = {
    "page_view": [
        _body(
            {
                "type": "event",
                "name": "page_view",
                "url": f"{ORIGIN}/c/{i}?utm_source=bench",
                "title": f"Category {i}",
                "page_type": "category",
            }
        )
        for i in range(16)
    ],
    "product_view": [
        _body(
            {
                "type": "event",
                "name": "product_view",
                "product": {
                    "id": f"sku-{i}",
                    "title": f"Product {i}",
                    "price": 10 + i + 0.99,
                    "currency": "EUR",
                    "category": "shoes",
                    "brand": "Acme",
                },
            }
        )
        for i in range(16)
    ],
    "cart_add": [
        _body(
            {
                "type": "event",
                "name": "cart_add",
                "item": {"id": f"sku-{i}", "quantity": 1, "price": 10 + i + 0.99},
            }
        )
        for i in range(16)
    ],
    "exit_intent": [_body({"type": "signal", "name": "exit_intent", "kind": "top_edge"})],
}
# Per 10 messages: 4 page views, 3 product views, 2 cart adds, 1 exit-intent signal.
_MIX = ["page_view"] * 4 + ["product_view"] * 3 + ["cart_add"] * 2 + ["exit_intent"]


def _message_plan(seed: int, length: int = 40) -> list[str]:
    """A session's repeating sequence of frame bodies (the mix above, shuffled per session)."""
    rng = random.Random(seed)
    kinds = _MIX * (length // len(_MIX))
    rng.shuffle(kinds)
    return [rng.choice(_BODIES[kind]) for kind in kinds]


@dataclass
class _Session:
    ws: Any
    plan: list[str]
    pending: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent_in_window: int = 0
    sending_done: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def _connect(ws_url: str, site: str, index: int, wait_s: float) -> Any:
    """Open one socket and complete the hello (welcome, then the ack of the hello id)."""
    from websockets.asyncio.client import connect

    ws = await connect(
        ws_url,
        origin=ORIGIN,  # type: ignore[arg-type]
        compression=None,
        proxy=None,
        open_timeout=wait_s,
        ping_interval=None,
        close_timeout=2,
        max_queue=None,
        user_agent_header=None,
    )
    try:
        visitor = f"bench{index:06d}{secrets.token_hex(5)}"
        hello = {
            "id": "h",
            "type": "hello",
            "v": 1,
            "site": site,
            "visitor": visitor,
            "page": {"url": f"{ORIGIN}/", "page_type": "home"},
            "device": "desktop",
        }
        await ws.send(json.dumps(hello))
        async with asyncio.timeout(wait_s):
            while True:
                answer = _decode(await ws.recv())
                if answer.get("type") == "ack" and "h" in answer.get("ids", ()):
                    return ws
                if answer.get("type") == "error":
                    raise RuntimeError(f"hello refused: {answer}")
    except BaseException:
        await ws.close()
        raise


async def _connect_many(
    ws_url: str, site: str, count: int, parallel: int = 64, wait_s: float = 15.0
) -> tuple[list[Any], Counter[str]]:
    gate = asyncio.Semaphore(parallel)
    failures: Counter[str] = Counter()

    async def one(index: int) -> Any:
        async with gate:
            try:
                return await _connect(ws_url, site, index, wait_s)
            except Exception as exc:
                failures[type(exc).__name__] += 1
                return None

    sockets = await asyncio.gather(*(one(i) for i in range(count)))
    return [ws for ws in sockets if ws is not None], failures


async def _close_all(sockets: list[Any], parallel: int = 256) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(ws: Any) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)

    await asyncio.gather(*(one(ws) for ws in sockets))


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _latency_summary(latencies: list[float], prefix: str = "") -> dict[str, float]:
    values = sorted(latencies)
    return {
        f"{prefix}p50_ms": round(_percentile(values, 50) * 1000, 3),
        f"{prefix}p95_ms": round(_percentile(values, 95) * 1000, 3),
        f"{prefix}p99_ms": round(_percentile(values, 99) * 1000, 3),
        f"{prefix}max_ms": round(values[-1] * 1000, 3) if values else float("nan"),
    }


def _cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each named process tree, and of the whole machine."""
    machine = psutil.cpu_times()
    out = {"machine": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)}
    for role, pid in roots.items():
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        out[role] = total
    return out


async def _cpu_during(roots: dict[str, int], start: float, stop: float) -> dict[str, float]:
    """CPU seconds each process tree used between two perf_counter instants."""
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    before = _cpu_seconds(roots)
    await asyncio.sleep(max(0.0, stop - time.perf_counter()))
    after = _cpu_seconds(roots)
    return {role: after[role] - before[role] for role in after}


def _cpu_summary(used: dict[str, float], seconds: float, messages: int) -> dict[str, Any]:
    """Cores busy per role (``others``: everything else on this shared machine, the noise), and
    the server's CPU microseconds per acked message (less sensitive to that noise than rates)."""
    busy = {role: value / seconds for role, value in used.items()}
    machine = busy.pop("machine", 0.0)
    busy["others"] = max(0.0, machine - sum(busy.values()))
    summary: dict[str, Any] = {"cores_busy": {role: round(v, 2) for role, v in busy.items()}}
    if "server" in used and messages:
        summary["server_cpu_us_per_msg"] = round(used["server"] / messages * 1e6, 1)
    return summary


async def _receive_acks(session: _Session, record_from: float) -> None:
    """Match acks to sent ids; record the round trip of messages sent after ``record_from``."""
    from websockets.exceptions import ConnectionClosed

    perf_counter = time.perf_counter
    pending = session.pending
    try:
        async for raw in session.ws:
            now = perf_counter()
            message = _decode(raw)
            kind = message.get("type")
            if kind == "ack":
                for msg_id in message.get("ids", ()):
                    sent = pending.pop(msg_id, None)
                    # Only messages sent once measuring began: a backlog from the warmup,
                    # acked inside the window, is not throughput of the window.
                    if sent is not None and sent >= record_from:
                        session.acked_at.append(now)
                        session.latencies.append(now - sent)
            elif kind == "error":
                session.errors[str(message.get("code"))] += 1
                pending.pop(str(message.get("id")), None)
            if session.sending_done and not pending:
                break
    except ConnectionClosed:
        session.errors["connection_closed"] += 1
    finally:
        session.done.set()


async def _send_on_schedule(
    session: _Session,
    start: float,
    period: float,
    count: int,
    window: tuple[float, float],
    lags: list[float],
) -> None:
    perf_counter = time.perf_counter
    plan = session.plan
    try:
        for k in range(count):
            target = start + k * period
            delay = target - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            msg_id = f"o{k}"
            now = perf_counter()
            session.pending[msg_id] = now
            lags.append(now - target)
            if window[0] <= now < window[1]:
                session.sent_in_window += 1
            await session.ws.send(plan[k % len(plan)] + msg_id + '"}')
    finally:
        session.sending_done = True
        if not session.pending:
            session.done.set()


async def open_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fixed total rate, evenly staggered over the sessions; latency of every event -> ack."""
    sessions_n, rate = cfg["sessions"], cfg["rate"]
    warmup, duration = cfg["warmup"], cfg["duration"]
    sockets, failures = await _connect_many(cfg["ws_url"], cfg["site"], sessions_n)
    if not sockets:
        raise RuntimeError(f"no session could connect: {dict(failures)}")
    n = len(sockets)
    period = n / rate  # each session's interval, so that the total is `rate` messages/s
    count = max(1, round((warmup + duration) * rate / n))
    t0 = time.perf_counter() + 0.5
    measure_from, measure_to = t0 + warmup, t0 + warmup + duration
    sessions = [_Session(ws, _message_plan(i)) for i, ws in enumerate(sockets)]
    lags: list[float] = []
    cpu = asyncio.create_task(_cpu_during(cfg.get("watch", {}), measure_from, measure_to))
    receivers = [asyncio.create_task(_receive_acks(s, measure_from)) for s in sessions]
    senders = [
        asyncio.create_task(
            _send_on_schedule(
                s, t0 + i * period / n, period, count, (measure_from, measure_to), lags
            )
        )
        for i, s in enumerate(sessions)
    ]
    await asyncio.wait(senders, timeout=warmup + duration + 30)
    drain_deadline = time.perf_counter() + cfg["drain"]
    for s in sessions:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(s.done.wait(), max(0.01, drain_deadline - time.perf_counter()))
    for task in senders + receivers:
        task.cancel()
    await asyncio.gather(*senders, *receivers, return_exceptions=True)
    cpu_used = await cpu
    await _close_all(sockets)

    latencies = [x for s in sessions for x in s.latencies]
    acked_in_window = sum(measure_from <= t < measure_to for s in sessions for t in s.acked_at)
    sent_in_window = sum(s.sent_in_window for s in sessions)
    errors = sum((s.errors for s in sessions), Counter())
    return {
        **_latency_summary(latencies),
        "offered_rate": round(sent_in_window / duration, 1),
        "achieved_rate": round(acked_in_window / duration, 1),
        "samples": len(latencies),
        "lost": sum(len(s.pending) for s in sessions),
        "errors": dict(errors),
        "sessions": n,
        "connect_failures": dict(failures),
        "generator_lag_p99_ms": round(_percentile(sorted(lags), 99) * 1000, 3),
        "open_loop_cpu": _cpu_summary(cpu_used, duration, acked_in_window),
    }


async def closed_loop(cfg: dict[str, Any]) -> dict[str, Any]:
    """Each session sends its next message when the previous one is acked."""
    from websockets.exceptions import ConnectionClosed

    warmup, duration = cfg["warmup"], cfg["duration"]
    sockets, failures = await _connect_many(cfg["ws_url"], cfg["site"], cfg["sessions"])
    if not sockets:
        raise RuntimeError(f"no session could connect: {dict(failures)}")
    t0 = time.perf_counter() + 0.5
    measure_from, stop_at = t0 + warmup, t0 + warmup + duration
    counts = [0] * len(sockets)
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def run(index: int, ws: Any) -> None:
        plan = _message_plan(index)
        perf_counter = time.perf_counter
        await asyncio.sleep(max(0.0, t0 - perf_counter()))
        k = 0
        try:
            while (sent := perf_counter()) < stop_at:
                msg_id = f"c{k}"
                await ws.send(plan[k % len(plan)] + msg_id + '"}')
                k += 1
                while True:
                    answer = _decode(await ws.recv())
                    kind = answer.get("type")
                    if kind == "ack" and msg_id in answer.get("ids", ()):
                        now = perf_counter()
                        if measure_from <= sent and now <= stop_at:
                            counts[index] += 1
                            latencies.append(now - sent)
                        break
                    if kind == "error" and answer.get("id") == msg_id:
                        errors[str(answer.get("code"))] += 1
                        break
        except ConnectionClosed:
            errors["connection_closed"] += 1

    cpu = asyncio.create_task(_cpu_during(cfg.get("watch", {}), measure_from, stop_at))
    async with asyncio.timeout(warmup + duration + 30):
        await asyncio.gather(*(run(i, ws) for i, ws in enumerate(sockets)))
    cpu_used = await cpu
    await _close_all(sockets)
    summary = _latency_summary(latencies, "closed_")
    return {
        "max_msgs_per_s": round(sum(counts) / duration, 1),
        "closed_p50_ms": summary["closed_p50_ms"],
        "closed_p99_ms": summary["closed_p99_ms"],
        "closed_sessions": len(sockets),
        "closed_errors": dict(errors),
        "closed_loop_cpu": _cpu_summary(cpu_used, duration, sum(counts)),
    }


async def idle(cfg: dict[str, Any], conn: Connection) -> dict[str, Any]:
    """Open ``idle`` sessions (hello, then nothing), report, wait for the release, close them."""
    started = time.perf_counter()
    sockets, failures = await _connect_many(
        cfg["ws_url"], cfg["site"], cfg["idle"], parallel=cfg.get("parallel", 64)
    )
    conn.send(("ready", {"open": len(sockets), "connect_s": time.perf_counter() - started}))
    released = await asyncio.to_thread(conn.poll, cfg.get("hold_timeout", 120))
    if released:
        conn.recv()
    still_open = sum(1 for ws in sockets if ws.state.name == "OPEN")
    await _close_all(sockets)
    return {"open": len(sockets), "still_open": still_open, "failures": dict(failures)}


def _generator_main(conn: Connection, cpus: list[int] | None) -> None:
    """Entry point of the load generator process: run commands from the orchestrator."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when we stop
    _die_with_parent()
    if cpus:
        os.sched_setaffinity(0, cpus)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    commands: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]] = {
        "open_loop": open_loop,
        "closed_loop": closed_loop,
        "idle": lambda cfg: idle(cfg, conn),
    }
    while conn.poll(900):
        try:
            command, cfg = conn.recv()
        except EOFError:
            return
        if command == "exit":
            return
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                result = runner.run(commands[command](cfg))
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class LoadGenerator:
    """The orchestrator's handle on the generator process."""

    def __init__(self, cpus: list[int] | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=_generator_main, args=(child_conn, cpus), name="load-generator", daemon=True
        )
        self.process.start()
        child_conn.close()

    def _reply(self, timeout: float) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"the load generator did not answer within {timeout:g} s")
        status, payload = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"load generator failed:\n{payload}")
        return status, payload

    def run(self, command: str, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.conn.send((command, cfg))
        return dict(self._reply(timeout)[1])

    def hold_idle(self, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Start the idle phase; returns once the sockets are open (the caller then measures)."""
        self.conn.send(("idle", cfg))
        status, payload = self._reply(timeout)
        assert status == "ready", status
        return dict(payload)

    def release_idle(self, timeout: float = 60) -> dict[str, Any]:
        self.conn.send(("release", {}))
        return dict(self._reply(timeout)[1])

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("exit", {}))
            self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.conn.close()


# --- the benchmark -------------------------------------------------------------------------------


def measure(
    server: ServerUnderTest, generator: LoadGenerator, site: str, args: argparse.Namespace
) -> dict[str, Any]:
    assert server.process is not None and generator.process.pid is not None
    watch = {"server": server.process.pid, "generator": generator.process.pid}
    valkey = [p.pid for p in psutil.Process().children() if "valkey" in p.name()]
    if valkey:
        watch["valkey"] = valkey[0]
    base = {"ws_url": server.ws_url, "site": site, "watch": watch}
    result: dict[str, Any] = {}

    # Warm up first, so that one-time costs (lazy imports, caches, the first site lookup) are
    # neither in the idle-memory baseline nor in the first latency samples.
    generator.run(
        "closed_loop",
        {**base, "sessions": min(20, args.sessions), "warmup": 0.0, "duration": args.warmup},
        timeout=60,
    )

    progress(f"{server.name}: idle memory with {args.idle} connections")
    before = server.settled_rss()
    opened = generator.hold_idle({**base, "idle": args.idle}, timeout=args.idle / 20 + 60)
    try:
        time.sleep(1.0)
        after = server.settled_rss()
    finally:
        released = generator.release_idle()
    n_open = max(1, int(opened["open"]))
    result.update(
        rss_kib_per_idle_conn=round((after - before) / 1024 / n_open, 2),
        rss_before_kib=before // 1024,
        rss_after_kib=after // 1024,
        idle_connections=int(opened["open"]),
        idle_connect_s=round(float(opened["connect_s"]), 2),
        idle_still_open=released["still_open"],
        idle_connect_failures=released["failures"],
    )
    time.sleep(0.5)

    progress(
        f"{server.name}: {args.sessions} sessions at {args.rate:g} msgs/s for {args.duration}s"
    )
    result.update(
        generator.run(
            "open_loop",
            {
                **base,
                "sessions": args.sessions,
                "rate": args.rate,
                "warmup": args.warmup,
                "duration": args.duration,
                "drain": 5.0,
            },
            timeout=args.warmup + args.duration + 120,
        )
    )
    progress(
        f"{server.name}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
        f"achieved {result['achieved_rate']} msgs/s"
    )

    progress(f"{server.name}: closed loop, {args.sessions} sessions for {args.closed_duration}s")
    result.update(
        generator.run(
            "closed_loop",
            {
                **base,
                "sessions": args.sessions,
                "warmup": args.warmup,
                "duration": args.closed_duration,
            },
            timeout=args.warmup + args.closed_duration + 120,
        )
    )
    progress(f"{server.name}: max {result['max_msgs_per_s']} msgs/s")
    return result


def _cpu_plan(pin: bool, workers: int) -> tuple[set[int] | None, list[int] | None]:
    """(server CPUs, CPUs of everything else) or (None, None) when not pinning."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or workers != 1 or len(available) < 2:
        return None, None
    return {available[-1]}, available[:-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    fd_limit = _raise_fd_limit(args.idle + args.sessions + 1024)
    if fd_limit < args.idle + args.sessions + 64:
        args.idle = max(1, fd_limit - args.sessions - 64)
        progress(f"file-descriptor limit {fd_limit}: idle connections reduced to {args.idle}")
    server_cpus, other_cpus = _cpu_plan(args.pin, args.workers)
    args.pinned = server_cpus is not None
    if other_cpus:
        # Valkey and the generator inherit this; each server process is pinned at spawn.
        os.sched_setaffinity(0, other_cpus)
    progress(f"CPUs: server {server_cpus or 'any'}, generator and Valkey {other_cpus or 'any'}")

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="widget-bench-") as tmp_name:
        tmp = Path(tmp_name)
        valkey = EmbeddedValkey(tmp / "valkey", persist=False)
        generator: LoadGenerator | None = None
        servers: list[ServerUnderTest] = []
        try:
            valkey.start()
            progress(f"Valkey on {valkey.url}")
            site = create_site(valkey.url)
            generator = LoadGenerator(other_cpus)
            env = dict(os.environ)
            env.update(
                REDIS_URL=valkey.url,
                WIDGET_DATA_DIR=str(tmp / "server"),
                WIDGET_LOG_LEVEL="warning",
                WIDGET_LOG_FORMAT="text",
                WIDGET_WORKERS=str(args.workers),
                # The per-connection limit protects against misbehaving browsers; the load here
                # is intentional, so raise it out of the way, and the per-address connection
                # limit too (every connection comes from 127.0.0.1).
                WIDGET_RATE_PER_SECOND="10000",
                WIDGET_RATE_BURST="100000",
                WIDGET_MAX_CONNECTIONS_PER_IP="0",
            )
            port = free_port()
            product = ServerUnderTest(
                "product",
                [sys.executable, "-m", "widget_server.cli", "serve", "--port", str(port)],
                port,
                {**env, "WIDGET_PORT": str(port)},
                tmp / "product.log",
                server_cpus,
            )
            port = free_port()
            echo = ServerUnderTest(
                "echo",
                # The product's WebSocket stack (websockets-sansio, no per-message deflate).
                [sys.executable, str(ECHO_APP), "--port", str(port), "--ws", "websockets-sansio"],
                port,
                env,
                tmp / "echo.log",
                server_cpus,
            )
            for server in (product, echo):
                progress(f"starting {server.name} on port {server.port}")
                servers.append(server.start())
                try:
                    results[server.name] = measure(server, generator, site, args)
                except Exception:
                    progress(f"{server.name} log:\n{server.log_tail()}")
                    raise
                finally:
                    server.stop()
        finally:
            if generator is not None:
                generator.stop()
            for server in servers:
                server.stop()
            valkey.stop()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    product, echo = results["product"], results["echo"]
    ratio = product["max_msgs_per_s"] / echo["max_msgs_per_s"] if echo["max_msgs_per_s"] else 0.0
    # The same comparison from CPU time per message: what the ratio would be if both servers were
    # CPU-bound, and much steadier than rates on a machine shared with other work.
    cpu = [r["closed_loop_cpu"].get("server_cpu_us_per_msg") for r in (echo, product)]
    cpu_ratio = round(cpu[0] / cpu[1], 3) if all(cpu) else None
    p99_over = _over(product["p99_ms"], echo["p99_ms"])
    rss_over = _over(product["rss_kib_per_idle_conn"], echo["rss_kib_per_idle_conn"])
    met = {
        "ratio": ratio >= TARGETS["ratio"],
        "cpu_ratio": cpu_ratio is not None and cpu_ratio >= TARGETS["cpu_ratio"],
        "p99_over_echo": p99_over is not None
        and p99_over <= TARGETS["p99_over_echo"]
        and product["achieved_rate"] >= 0.95 * args.rate,
        "rss_over_echo": rss_over is not None and rss_over <= TARGETS["rss_over_echo"],
    }
    return {
        "product": product,
        "echo": echo,
        "ratio_msgs_per_s": round(ratio, 3),
        "ratio_server_cpu_per_msg": cpu_ratio,
        "p99_over_echo": p99_over,
        "rss_over_echo": rss_over,
        "targets": TARGETS,
        "met": met,
        "config": {
            "sessions": args.sessions,
            "rate": args.rate,
            "duration_s": args.duration,
            "closed_duration_s": args.closed_duration,
            "warmup_s": args.warmup,
            "idle": args.idle,
            "workers": args.workers,
            "pinned": args.pinned,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def _over(product: float | None, echo: float | None) -> float | None:
    return round(product / echo, 2) if product and echo else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200, help="concurrent sessions")
    parser.add_argument("--rate", type=float, default=1000.0, help="total msgs/s (open loop)")
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds")
    parser.add_argument("--closed-duration", type=float, default=8.0, help="closed-loop seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections")
    parser.add_argument("--workers", type=int, default=1, help="product server workers")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pin the server to one CPU and the rest to the others (single worker only)",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.rate, args.duration = 20, 200.0, 1.5
        args.closed_duration, args.warmup, args.idle = 1.5, 0.3, 300
    if min(args.sessions, args.idle, args.workers) < 1 or min(args.rate, args.duration) <= 0:
        parser.error("--sessions, --idle, --workers, --rate and --duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C, SIGTERM and a closed terminal all unwind through the cleanup below (SIGINT too when
    # this was started with it ignored, as shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_sigterm)
    try:
        results = run(args)
    except KeyboardInterrupt:
        progress("interrupted; everything stopped")
        return 130
    print(json.dumps(report(results, args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
