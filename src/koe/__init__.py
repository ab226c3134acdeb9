"""koe (声): a self-hosted real-time voice streaming gateway."""

__version__ = "0.1.0"
