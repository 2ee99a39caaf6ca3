"""A small HTTP/1.1 client for the load generator: keep-alive connections to one local server.

Dependency-free and cheap on purpose: the generator shares the machine's cores with the server
it measures. It speaks just what ``elasticir serve`` answers: ``Content-Length`` bodies (a
body without one is read to the end of a ``Connection: close`` answer; a chunked body is a
protocol error). A pool keeps up to ``max_connections`` connections; a request that finds all
of them busy waits for one, and a reused connection the server has closed meanwhile is
replaced once, transparently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConnectionPool", "ProtocolError", "Response", "ServerAddress", "get_json"]

_MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


@dataclass(frozen=True)
class ServerAddress:
    """A loopback server: ``host``, ``port`` and the path prefix its endpoints sit under."""

    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        """``http://127.0.0.1:8000`` (or ``localhost``, ``[::1]``); ``ValueError`` for
        anything else: load is only ever generated against this machine."""
        parts = urlsplit(url.strip())
        if parts.scheme != "http":
            raise ValueError(
                f"URL {url!r}: expected http://HOST:PORT on this machine "
                "(e.g. http://127.0.0.1:8000); https is not supported"
            )
        host = parts.hostname or ""
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(
                    f"URL {url!r}: {host or 'no host'} is not a loopback address; the load "
                    "generator only sends to this machine (127.0.0.1, ::1 or localhost)"
                )
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError(f"URL {url!r}: bad port") from None
        if parts.query or parts.fragment:
            raise ValueError(f"URL {url!r}: expected the server's base URL, without ?query or #")
        prefix = parts.path.rstrip("/")
        if prefix.endswith("/search"):  # the endpoint given instead of the server
            prefix = prefix[: -len("/search")]
        return cls(host, port, prefix)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"http://{self.authority}{self.prefix}{path}"

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        """The bytes of one request (a JSON body when ``body``)."""
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.authority}\r\n"
        if body or method == "POST":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return (head + "\r\n").encode("ascii") + body


@dataclass
class Response:
    """``status``, lower-cased ``headers``, the ``body`` and ``sent``: the event loop's time
    when the request was written."""

    status: int
    headers: dict[str, str]
    body: bytes
    sent: float

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reusable = True  # False once either side has closed it

    async def exchange(self, data: bytes, loop: asyncio.AbstractEventLoop) -> Response:
        self.writer.write(data)
        sent = loop.time()
        await self.writer.drain()
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError("response head over 64 KiB") from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        status = int(code)
        connection = headers.get("connection", "").lower()
        keep = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise ProtocolError("chunked response bodies are not supported")
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
            body = await self.reader.readexactly(length)
        elif status in (204, 304) or status < 200:
            body = b""
        else:  # no length: the body runs to the end of the connection
            body = await self.reader.read()
            keep = False
        if not keep:
            self.close()
        return Response(status, headers, body, sent)

    def close(self) -> None:
        self.reusable = False
        self.writer.close()


class ConnectionPool:
    """Keep-alive connections to ``address``, at most ``max_connections`` at once."""

    def __init__(self, address: ServerAddress, max_connections: int = 256) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.address = address
        self.max_connections = max_connections
        self._idle: deque[_Connection] = deque()
        self._free = asyncio.Semaphore(max_connections)
        self.opened = 0  # connections opened, replacements included
        self.waited = 0  # requests that found every connection busy

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self.address.host, self.address.port, limit=_MAX_HEAD
        )
        self.opened += 1
        return _Connection(reader, writer)

    async def send(self, data: bytes) -> Response:
        """Send the request bytes ``data``; the answer, whatever its status. Raises
        ``OSError`` (connection), ``asyncio.IncompleteReadError`` or :class:`ProtocolError`;
        a cancelled request closes its connection (its state is unknown)."""
        loop = asyncio.get_running_loop()
        if self._free.locked():
            self.waited += 1
        async with self._free:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._open()
            try:
                try:
                    response = await conn.exchange(data, loop)
                except (ConnectionError, asyncio.IncompleteReadError) as error:
                    conn.close()
                    stale = not isinstance(error, asyncio.IncompleteReadError) or not error.partial
                    if not (reused and stale):
                        raise
                    # the server closed this idle connection: once more on a fresh one
                    conn = await self._open()
                    response = await conn.exchange(data, loop)
            except BaseException:
                conn.close()
                raise
            if conn.reusable:
                self._idle.append(conn)
            return response

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            try:
                await conn.writer.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass


async def get_json(address: ServerAddress, path: str, timeout: float) -> tuple[int, Any]:
    """``(status, JSON body or None)`` of ``GET path`` on a connection of its own."""
    pool = ConnectionPool(address, 1)
    try:
        response = await asyncio.wait_for(pool.send(address.request("GET", path)), timeout)
    finally:
        await pool.close()
    try:
        return response.status, response.json()
    except ValueError:
        return response.status, None
