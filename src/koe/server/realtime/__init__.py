"""The Realtime door (Azure Voice Live, OpenAI Realtime GA and beta): `door` is the WebSocket endpoint and the
connection's two loops, `mapping` translates Realtime settings and items to the voice engine's, and `render` turns
engine events into server events in the client's dialect."""
