"""Helpers for the cluster tests: a real redis-server per test, cluster nodes' registries in this process, and a
poll for state other tasks own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from koe.bench._redis import RedisServer
from koe.config import ClusterSettings
from koe.server.cluster.registry import RedisCallRegistry

TTL_S = 2.0
"""Short, so that a lost node is found within a test's patience."""
CLOSE_S = 10.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def cluster_settings(redis: RedisServer, **overrides: object) -> ClusterSettings:
    values: dict[str, object] = {"redis_url": redis.url, "node_ttl_s": TTL_S, "command_timeout_s": 2.0}
    return ClusterSettings.model_validate({**values, **overrides})


@contextlib.asynccontextmanager
async def nodes(redis: RedisServer, *names: str, **overrides: object) -> AsyncIterator[list[RedisCallRegistry]]:
    """Registries of cluster nodes named `names`, started and connected; closed afterwards."""
    registries = [RedisCallRegistry(cluster_settings(redis, **overrides), node_id=name) for name in names]
    try:
        for registry in registries:
            await registry.start()
        await until(lambda: all(r.status()["redis"] == "up" for r in registries))
        yield registries
    finally:
        # asyncio.wait, not wait_for: a close that ignored its cancellation would make wait_for wait forever, and
        # the test would end in pytest's 300 s timeout instead of saying which node did not close.
        for registry in registries:
            closing = asyncio.ensure_future(registry.close())
            done, _ = await asyncio.wait({closing}, timeout=CLOSE_S)
            assert done, f"node {registry.node} did not close within {CLOSE_S} s"


async def until(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)
