"""HTTP/1.1: head grammar, chunked framing both ways, the response writer and the asyncio shell."""
