"""The ASGI bridge: the request cycle every protocol drives, lifespan, pathsend, built-in apps."""
