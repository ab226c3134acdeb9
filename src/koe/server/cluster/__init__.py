"""koe nodes sharing their calls over Redis: every node's `/v1/calls`, call events and call monitor show the calls
of every node, and Call Automation's commands reach the node with the call's media (docs/cluster.md).

`call_registry(settings)` is what the app uses: the in-process `CallRegistry` without `cluster.redis_url` (one
process, koe's default), else a `RedisCallRegistry` (`registry`). The rest: `entries` (what nodes tell each other),
`merge` (one call from the parts nodes hold of it), `link` (the Redis connection, heartbeats and liveness).
"""

from __future__ import annotations

from koe.config import Settings
from koe.server.calls.registry import CallRegistry


def call_registry(settings: Settings) -> CallRegistry:
    if settings.cluster.redis_url is None:
        return CallRegistry()
    from koe.server.cluster.registry import RedisCallRegistry

    return RedisCallRegistry(settings.cluster)
