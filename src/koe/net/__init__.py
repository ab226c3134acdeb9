"""Transports that know nothing of koe's doors: a full-duplex HTTP/2 (and HTTP/1.1) listener on `h2` and `h11`
(`h2listener`, with the route types in `h2types`), and `inprocess`, which serves any ASGI app on Hypercorn inside
the running event loop (for the simulators, the benchmarks and the tests)."""
