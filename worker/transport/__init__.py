"""Flow control both ways and the stall guard, under HTTP and WebSocket connections."""
