"""The Sora door, a Suzu-compatible audio streaming gateway on its own HTTP/2 listener: `gateway` (routes, request
checks, the per-connection packet loop), `metrics` (its counters) and `services/` (what a connection's audio
becomes: `koe` transcribes it, `relay` forwards it, `base` holds the interface and Suzu's `test` and `dump`)."""
