"""The master process: binds listeners, forks workers and supervises them (no asyncio)."""
