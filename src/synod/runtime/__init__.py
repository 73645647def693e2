"""The only place with I/O: asyncio TCP, request/response, SQLite storage, node hosts."""
