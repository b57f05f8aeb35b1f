"""WebSocket connections: the handshake, the websockets sans-I/O protocol and its asyncio shell."""
