"""The connection edge: PROXY protocol, TLS handshake, and trusted proxy headers."""
