"""WebSocket connections: the handshake (websockets' sans-I/O), corral's frame layer, the shell."""
