"""A lean HTTP/1.1 client for one apiserver: pooled keep-alive connections and watch streams.

A controller's hot path is one small JSON request after another (status writes), and the
apiserver answers plain HTTP/1.1, framed by ``Content-Length`` or chunked encoding.
aiohttp's general-purpose request path (URL objects, cookie jar, tracing hooks, header
multidicts) cost about as much CPU per request as the rest of a reconcile; this module
costs half of aiohttp's per status write (the lean ceiling in ``bench/README.md``), and
every CPU millisecond a controller saves goes to the apiserver sharing its machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

__all__ = ["HttpPool", "ProtocolError", "RequestNotSent", "Response", "StreamingResponse"]

_IDLE_SECONDS = 60.0  # pooled connections idle longer are dropped (the apiserver allows 90 s)
_READ_LIMIT = 4 * 1024 * 1024  # longest header block or chunk-size line accepted
_SAFE_PATH = "/%:@-._~!$&'()*+,;="
# Sent again after the server read them, as Go's transport does (Request.isReplayable).
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ProtocolError(ConnectionError):
    """The connection broke mid-answer, or the answer was not valid HTTP/1.1."""


class _ClosedBeforeAnswer(ProtocolError):
    """The server closed the connection without sending a byte of an answer."""


class RequestNotSent(ConnectionError):
    """No byte of the request reached the server (say, the connection was refused, or the
    proxy refused the tunnel): sending it again cannot apply it twice."""


class _NothingWritten(RequestNotSent):
    """The connection was found closed when the request was written to it."""


@dataclass(slots=True)
class Response:
    """A complete answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return not self.reader.at_eof() and now - self.idle_since < _IDLE_SECONDS

    async def send(self, head: bytes, body: bytes | None) -> None:
        self.writer.write(head + body if body else head)
        if self.writer.transport.is_closing():  # closed before, or the first send failed
            raise _NothingWritten("the connection was closed before the request was sent")
        await self.writer.drain()

    async def read_head(self) -> tuple[int, dict[str, str], bool]:
        """Read the status line and headers; returns them and whether to keep the connection."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _ClosedBeforeAnswer("the server closed the connection") from None
            raise ProtocolError("the connection closed in the middle of an answer") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("the answer's header block is too large") from None
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        try:
            if not version.startswith("HTTP/1."):
                raise ValueError
            status = int(rest[:3])
        except ValueError:
            raise ProtocolError(f"not an HTTP/1.x answer: {lines[0][:80]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        encoding = headers.get("transfer-encoding", "").lower()
        # Without a length, chunking or a bodiless status, the body runs to the connection's end.
        framed = (
            encoding.endswith("chunked")
            if encoding
            else ("content-length" in headers or _bodiless(status))
        )
        keep = framed and version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        return status, headers, keep

    async def read_body(self, status: int, headers: Mapping[str, str]) -> bytes:
        if "transfer-encoding" not in headers and (length := headers.get("content-length")):
            try:  # the common case, without an async generator
                return await self.reader.readexactly(int(length))
            except asyncio.IncompleteReadError:
                raise ProtocolError("the connection closed in the middle of an answer") from None
            except ValueError:
                raise ProtocolError(f"invalid Content-Length {length!r}") from None
        return b"".join([part async for part in self.parts(status, headers)])

    async def parts(self, status: int, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
        """The body as it arrives: chunk by chunk, or up to its length or the connection's end."""
        try:
            encoding = headers.get("transfer-encoding", "").lower()
            if encoding.endswith("chunked"):
                while True:
                    size_line = await self.reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0], 16)
                    if size == 0:
                        while await self.reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        return
                    chunk = await self.reader.readexactly(size + 2)
                    if chunk[-2:] != b"\r\n":
                        raise ProtocolError("a chunk does not end with CRLF")
                    yield chunk[:-2]
            elif not encoding and (length := headers.get("content-length")) is not None:
                yield await self.reader.readexactly(int(length))
            elif encoding or not _bodiless(status):  # up to the connection's end
                while chunk := await self.reader.read(65536):
                    yield chunk
        except asyncio.IncompleteReadError:
            raise ProtocolError("the connection closed in the middle of an answer") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("a chunk-size line is too long") from None
        except ValueError:
            raise ProtocolError("invalid body framing") from None

    def close(self) -> None:
        self.writer.close()


def _bodiless(status: int) -> bool:
    return 100 <= status < 200 or status in (204, 304)


class StreamingResponse:
    """An answer whose body is read as it arrives (a watch); each read is time-limited."""

    def __init__(
        self,
        connection: _Connection,
        status: int,
        headers: dict[str, str],
        read_timeout: float | None,
    ) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection
        self._read_timeout = read_timeout

    async def read(self) -> bytes:
        """The whole body (for error answers)."""
        async with asyncio.timeout(self._read_timeout):
            return await self._connection.read_body(self.status, self.headers)

    async def lines(self) -> AsyncIterator[bytes]:
        """The body split at newlines; ``TimeoutError`` when nothing arrives in time."""
        parts = self._connection.parts(self.status, self.headers)
        pending: list[bytes] = []  # a line's beginning, when it spans chunks
        while True:
            async with asyncio.timeout(self._read_timeout):
                part = await anext(parts, None)
            if part is None:
                break
            if b"\n" not in part:
                pending.append(part)
                continue
            *complete, rest = b"".join([*pending, part]).split(b"\n")
            pending = [rest] if rest else []
            for line in complete:
                yield line
        if pending:
            yield b"".join(pending)


class HttpPool:
    """HTTP/1.1 connections to one server: at most ``limit`` requests at once over reused
    keep-alive connections, plus one dedicated connection per open stream (watch).

    A request is sent again on a new connection only when a reused connection turns out
    closed, as Go's HTTP client does: any request when none of it was written, a GET (or
    HEAD, OPTIONS) when the server closed the connection before the first byte of an answer.

    With ``proxy`` (an ``http://[user:password@]host:port`` URL), an https server is reached
    through an HTTP CONNECT tunnel and an http one by sending the proxy absolute URLs.
    """

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None = None,
        limit: int = 32,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) server URL: {url!r}")
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._server_hostname = (server_hostname or parts.hostname) if self._ssl else None
        self._prefix = parts.path.rstrip("/")
        self._origin = ""  # before the path in a request line: the origin, through a proxy
        fixed = {"Host": parts.netloc, **(headers or {})}
        self._proxy: tuple[str, int] | None = None
        self._tunnel = b""  # the CONNECT request opening a tunnel through the proxy
        if proxy:
            self._proxy, authorization = _parse_proxy(proxy)
            credentials = {"Proxy-Authorization": authorization} if authorization else {}
            if self._ssl:
                authority = _where(*self._address)  # with the port, even a default one
                lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
                lines.extend(_header(k, v) for k, v in credentials.items())
                self._tunnel = "\r\n".join([*lines, "", ""]).encode("latin-1")
            else:
                self._origin = f"http://{parts.netloc}"
                fixed.update(credentials)
        self._fixed = "".join(f"{_header(k, v)}\r\n" for k, v in fixed.items())
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    def _head(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        path, sep, query = target.partition("?")
        path = quote(self._prefix + path, safe=_SAFE_PATH)
        lines = [f"{method} {self._origin}{path}{sep}{query} HTTP/1.1\r\n"]
        lines.append(self._fixed)
        lines.extend(f"{_header(k, v)}\r\n" for k, v in headers.items())
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    async def _connect(self) -> _Connection:
        try:
            if self._proxy is None:
                reader, writer = await asyncio.open_connection(
                    *self._address,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                    limit=_READ_LIMIT,
                )
                connection = _Connection(reader, writer)
            else:
                connection = await self._through_proxy(self._proxy)
        except ssl.SSLCertVerificationError:
            raise  # a wrong CA or server name: not worth another try
        except OSError as exc:
            where = _where(*self._address) + (f" via {_where(*self._proxy)}" if self._proxy else "")
            raise RequestNotSent(f"cannot connect to {where}: {exc}") from exc
        self._open.add(connection)
        return connection

    async def _through_proxy(self, proxy: tuple[str, int]) -> _Connection:
        """A connection to the proxy; for an https server, a TLS tunnel through it (CONNECT)."""
        reader, writer = await asyncio.open_connection(*proxy, limit=_READ_LIMIT)
        connection = _Connection(reader, writer)
        if self._ssl is None:
            return connection
        try:
            await connection.send(self._tunnel, None)
            status, _, _ = await connection.read_head()
            if status != 200:
                raise ConnectionRefusedError(f"the proxy {_where(*proxy)} answered {status}")
            await writer.start_tls(self._ssl, server_hostname=self._server_hostname)
        except BaseException:
            connection.close()
            raise
        return connection

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float | None,
    ) -> Response:
        """Send one request (``target`` is the path and query) and read the whole answer."""
        head = self._head(method, target, headers, body)
        async with asyncio.timeout(timeout), self._slots:
            while True:
                connection, reused = await self._acquire()
                try:
                    await connection.send(head, body)
                    status, answer_headers, keep = await connection.read_head()
                except _NothingWritten:
                    self._discard(connection)
                    if reused:
                        continue
                    raise
                except (_ClosedBeforeAnswer, ConnectionResetError, BrokenPipeError):
                    self._discard(connection)
                    if reused and method in _REPLAYABLE:
                        continue  # the server closed it while idle, before answering
                    raise
                except BaseException:
                    self._discard(connection)
                    raise
                try:
                    data = await connection.read_body(status, answer_headers)
                except BaseException:  # an answer cut short is not sent again here
                    self._discard(connection)
                    raise
                if keep:
                    connection.idle_since = time.monotonic()
                    self._idle.append(connection)
                else:
                    self._discard(connection)
                return Response(status, answer_headers, data)

    async def _acquire(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now):
                return connection, True
            self._discard(connection)
        return await self._connect(), False

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        *,
        read_timeout: float | None,
    ) -> AsyncIterator[StreamingResponse]:
        """Send a request on a connection of its own and yield the answer to read as it comes."""
        head = self._head(method, target, headers, None)
        async with asyncio.timeout(read_timeout):
            connection = await self._connect()
        try:
            async with asyncio.timeout(read_timeout):
                await connection.send(head, None)
                status, answer_headers, _ = await connection.read_head()
            yield StreamingResponse(connection, status, answer_headers, read_timeout)
        finally:
            self._discard(connection)

    async def close(self) -> None:
        """Close every connection, idle or busy."""
        connections, self._open, self._idle = self._open, set(), []
        for connection in connections:
            connection.close()
        waits = [c.writer.wait_closed() for c in connections]
        if waits:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 2.0)


def _parse_proxy(url: str) -> tuple[tuple[str, int], str | None]:
    """The proxy's address and Proxy-Authorization value (from its URL's user information)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported proxy {url!r}: only http:// proxies are supported")
    authorization = None
    if parts.username is not None:
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user.encode()).decode()
    return (parts.hostname, parts.port or 80), authorization


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break")
    return f"{name}: {value}"
