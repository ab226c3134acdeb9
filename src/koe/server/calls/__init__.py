"""Live calls across the doors: `registry` (every ACS call and Sora connection, with a fan-out of its result
events), `api` (`/v1/calls`, its SSE and WebSocket event streams) and `webhooks` (results POSTed to a URL)."""
