from tests.server.cluster.support import redis_server

__all__ = ["redis_server"]
