"""Fixtures: one real embedded Valkey and one real server process for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from widget_server.embedded import EmbeddedValkey

from .support import ServerProcess, add_site


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), persist=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(valkey: EmbeddedValkey) -> str:
    return valkey.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(redis_url, tmp_path_factory.mktemp("server")).start()
    yield process
    process.stop()


@pytest.fixture
def site(redis_url: str) -> str:
    return add_site(redis_url)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def two_nodes(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on the same Valkey, as two nodes behind a load balancer."""
    base = tmp_path_factory.mktemp("nodes")
    a = ServerProcess(redis_url, Path(base) / "a").start()
    b = ServerProcess(redis_url, Path(base) / "b").start()
    yield a, b
    a.stop()
    b.stop()
