"""One serving process: the asyncio HTTP/1.1 and WebSocket stack that speaks ASGI."""
