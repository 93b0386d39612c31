"""The HTTP/1.1 transport against small raw servers: framing, reuse, stale connections, TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from customtask_sdk.client import ClientConfig, KubeClient
from customtask_sdk.client.http import HttpPool, ProtocolError, RequestNotSent
from customtask_sdk.testing.certs import CertificateAuthority

if TYPE_CHECKING:
    from conftest import HttpProxy

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server calling ``serve`` per connection; records each request's head."""

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.connections = 0
        self.requests: list[str] = []
        self.active = 0
        self.most_active = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> str:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        for line in head.split("\r\n"):
            if line.lower().startswith("content-length:"):
                await reader.readexactly(int(line.split(":")[1]))
        self.requests.append(head)
        return head


StartServer = Callable[..., Awaitable[tuple[RawServer, int]]]


@pytest.fixture
async def raw_server() -> AsyncIterator[StartServer]:
    servers: list[asyncio.Server] = []

    async def start(
        serve: Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        tls: ssl.SSLContext | None = None,
    ) -> tuple[RawServer, int]:
        raw = RawServer(lambda r, w: serve(raw, r, w))
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return raw, server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_connections_are_reused_and_bounded(raw_server: StartServer) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await raw.read_request(reader)
            raw.active += 1
            raw.most_active = max(raw.most_active, raw.active)
            await asyncio.sleep(0.01)
            raw.active -= 1
            w.write(ok(b'{"ok":true}'))

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None, limit=3)
    answers = await asyncio.gather(
        *(pool.request("GET", f"/x/{i}", {}, None, 5) for i in range(30))
    )
    await pool.close()
    assert all(a.status == 200 and a.body == b'{"ok":true}' for a in answers)
    assert raw.connections == 3
    assert raw.most_active == 3
    assert len(raw.requests) == 30


@pytest.mark.parametrize(("method", "replayable"), [("GET", True), ("PATCH", False)])
async def test_a_request_the_server_read_then_closed_is_sent_again_only_if_replayable(
    raw_server: StartServer, method: str, replayable: bool
) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(ok(b"{}"))
        await w.drain()
        if raw.connections == 1:
            await raw.read_request(reader)  # then close without answering, as an idle timeout
            return
        await asyncio.sleep(1)

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    body = None if method == "GET" else b"{}"
    assert (await pool.request(method, "/a", {}, body, 5)).status == 200
    if replayable:  # as Go's transport: the server may have closed it idle, just then
        assert (await pool.request(method, "/b", {}, body, 5)).status == 200
        assert [r.split()[1] for r in raw.requests] == ["/a", "/b", "/b"]
    else:  # the server read it: it may have applied it
        with pytest.raises(ProtocolError, match="closed the connection"):
            await pool.request(method, "/b", {}, body, 5)
        assert [r.split()[1] for r in raw.requests] == ["/a", "/b"]
    await pool.close()
    assert raw.connections == (2 if replayable else 1)


@pytest.mark.parametrize("reset", [False, True])
async def test_a_request_is_sent_on_a_new_connection_when_nothing_of_it_was_written(
    raw_server: StartServer, reset: bool
) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(ok(b"{}"))
        await w.drain()
        if raw.connections == 1:  # the idle connection is then closed, or reset
            if reset:
                w.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                w.transport.abort()
            return
        await asyncio.sleep(1)

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    assert (await pool.request("PATCH", "/a", {}, b"{}", 5)).status == 200
    with contextlib.suppress(ConnectionResetError):  # once the client has seen the close
        assert await asyncio.wait_for(pool._idle[0].reader.read(1), 5) == b""
    assert (await pool.request("PATCH", "/b", {}, b"{}", 5)).status == 200
    await pool.close()
    assert raw.connections == 2
    assert [r.split()[1] for r in raw.requests] == ["/a", "/b"]


async def test_a_fresh_connection_closed_before_an_answer_is_an_error(
    raw_server: StartServer,
) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    with pytest.raises(ProtocolError, match="closed the connection"):
        await pool.request("POST", "/a", {}, b"{}", 5)
    await pool.close()
    assert raw.connections == 1  # a POST on a fresh connection is never sent twice


async def test_chunked_bodies_with_extensions_and_trailers_and_close_delimited_ones(
    raw_server: StartServer,
) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b'4;ext=1\r\n{"a"\r\n3\r\n:1}\r\n0\r\nX-Trailer: yes\r\n\r\n')
        await raw.read_request(reader)
        w.write(b'HTTP/1.0 200 OK\r\n\r\n{"b":2}')
        await w.drain()

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    assert (await pool.request("GET", "/a", {}, None, 5)).body == b'{"a":1}'
    assert (await pool.request("GET", "/b", {}, None, 5)).body == b'{"b":2}'
    assert pool._idle == []  # a body that ran to the connection's end leaves nothing to reuse
    await pool.close()
    assert raw.connections == 1


async def test_stream_lines_split_across_and_within_chunks(raw_server: StartServer) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b'{"n":1}\n{"n"', b":2}\n", b'{"n":3}\n{"n":4}\n', b'{"n":5}'):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    async with pool.stream("GET", "/w?watch=true", {}, read_timeout=5) as response:
        lines = [line async for line in response.lines()]
    await pool.close()
    assert lines == [b'{"n":%d}' % n for n in range(1, 6)]
    assert raw.requests[0].startswith("GET /w?watch=true HTTP/1.1")


async def test_a_silent_stream_times_out(raw_server: StartServer) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{"n":1}\n\r\n')
        await asyncio.sleep(10)

    _, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    seen = []

    async def read_all() -> None:
        async with pool.stream("GET", "/w", {}, read_timeout=0.3) as response:
            async for line in response.lines():
                seen.append(line)

    with pytest.raises(TimeoutError):
        await read_all()
    await pool.close()
    assert seen == [b'{"n":1}']


async def test_paths_are_quoted_and_keep_the_servers_prefix(raw_server: StartServer) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(ok(b"{}"))

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}/k8s/clusters/c-1/", ssl_context=None)
    await pool.request("GET", "/api/v1/a b?x=1", {"X-Test": "v"}, None, 5)
    with pytest.raises(ValueError, match="line break"):
        await pool.request("GET", "/a", {"Authorization": "Bearer x\r\nEvil: 1"}, None, 5)
    await pool.close()
    head = raw.requests[0]
    assert head.startswith("GET /k8s/clusters/c-1/api/v1/a%20b?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n" in head
    assert "X-Test: v\r\n" in head


async def test_tls_server_name_is_checked_and_a_wrong_ca_is_not_retried(
    raw_server: StartServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = CertificateAuthority("test-ca")
    serving = ca.issue_serving(hosts=["apiserver.internal"])
    serving.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(ok(b'{"kind":"Status"}'))

    _, port = await raw_server(serve, tls)
    connects = 0
    open_connection = asyncio.open_connection

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal connects
        connects += 1
        return await open_connection(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "open_connection", counting)
    host = f"https://127.0.0.1:{port}"
    ca_pem = ca.cert_pem.decode()
    named = ClientConfig(host=host, ca_pem=ca_pem, tls_server_name="apiserver.internal")
    async with KubeClient(named) as client:
        assert await client.get("/version") == {"kind": "Status"}
    unnamed = ClientConfig(host=host, ca_pem=ca_pem)
    async with KubeClient(unnamed, retry_seconds=5) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.get("/version")
    assert connects == 2  # the failed handshake was not retried


async def test_large_objects_arrive_whole(raw_server: StartServer) -> None:
    big = b'{"data":"' + b"x" * 3_000_000 + b'"}'

    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if "/list" in await raw.read_request(reader):
            w.write(ok(big))
            return
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(big), 65536):  # one event spread over many chunks
            part = big[start : start + 65536]
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
        w.write(b"2\r\n\n\n\r\n0\r\n\r\n")
        await w.drain()

    _, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    assert (await pool.request("GET", "/list", {}, None, 10)).body == big
    async with pool.stream("GET", "/watch", {}, read_timeout=10) as response:
        lines = [line async for line in response.lines()]
    await pool.close()
    assert lines == [big, b""]


async def test_an_answer_cut_short_is_an_error_and_not_sent_again(raw_server: StartServer) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(ok(b"{}"))
        await raw.read_request(reader)
        w.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
        await w.drain()

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None)
    await pool.request("PATCH", "/a", {}, b"{}", 5)
    with pytest.raises(ProtocolError, match="middle of an answer"):
        await pool.request("PATCH", "/b", {}, b"{}", 5)
    await pool.close()
    assert [r.split()[1] for r in raw.requests] == ["/a", "/b"]


@pytest.mark.parametrize(
    ("body", "sent_again"),
    [
        ({"metadata": {"generateName": "run-"}}, False),  # a create: it may have landed
        ({"metadata": {"resourceVersion": "5"}, "status": {}}, True),  # a guarded write
    ],
)
async def test_the_client_sends_a_write_again_after_a_dropped_answer_only_if_guarded(
    raw_server: StartServer, body: dict[str, object], sent_again: bool
) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        if raw.connections > 1:
            w.write(ok(b"{}"))
            await w.drain()
        # the first connection is closed without an answer: the server may have applied it

    raw, port = await raw_server(serve)
    method = "PATCH" if sent_again else "POST"
    async with KubeClient(ClientConfig(host=f"http://127.0.0.1:{port}")) as client:
        if sent_again:
            assert await client.request(method, "/x", body=body) == {}
        else:
            with pytest.raises(ProtocolError, match="closed the connection"):
                await client.request(method, "/x", body=body)
    assert len(raw.requests) == (2 if sent_again else 1)


async def test_the_client_sends_any_request_again_when_it_could_not_connect(
    raw_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(ok(b'{"created":true}'))

    raw, port = await raw_server(serve)
    open_connection = asyncio.open_connection
    refusals = [ConnectionRefusedError(111, "Connection refused")]

    async def refusing_once(*args: object, **kwargs: object) -> object:
        if refusals:
            raise refusals.pop()
        return await open_connection(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "open_connection", refusing_once)
    async with KubeClient(ClientConfig(host=f"http://127.0.0.1:{port}")) as client:
        assert await client.create("/x", {"metadata": {"generateName": "run-"}}) == {
            "created": True
        }
        await client.close()  # a new connection for the next request, refused
        refusals.append(ConnectionRefusedError(111, "Connection refused"))
        with pytest.raises(RequestNotSent, match="cannot connect"):
            await client.request("POST", "/x", body={}, retry=False)
    assert len(raw.requests) == 1


@pytest.fixture
def apiserver_tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for ``apiserver.test``, and the CA (PEM) that signed it."""
    ca = CertificateAuthority("test-ca")
    ca.issue_serving(hosts=["apiserver.test"]).write(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    return tls, ca.cert_pem.decode()


async def serve_version(raw: RawServer, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        await raw.read_request(r)
        w.write(ok(b'{"major":"1"}'))


async def test_an_https_server_is_reached_through_a_connect_tunnel(
    raw_server: StartServer,
    http_proxy: HttpProxy,
    apiserver_tls: tuple[ssl.SSLContext, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls, ca_pem = apiserver_tls
    raw, port = await raw_server(serve_version, tls)
    proxy_port = http_proxy.url.rpartition(":")[2]
    monkeypatch.setenv("NO_PROXY", "*")  # the kubeconfig's proxy-url is used regardless
    proxied = f"http://user:p%40ss@127.0.0.1:{proxy_port}"
    config = ClientConfig(host=f"https://apiserver.test:{port}", ca_pem=ca_pem, proxy_url=proxied)
    async with KubeClient(config) as client:
        assert await client.get("/version") == {"major": "1"}
        assert await client.get("/version") == {"major": "1"}
    monkeypatch.setenv("NO_PROXY", "example.com,apiserver.test:1")  # another name or port
    monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy_port}")  # http:// is implied
    async with KubeClient(ClientConfig(config.host, ca_pem=ca_pem)) as client:
        assert await client.get("/version") == {"major": "1"}
    assert [head.split("\r\n")[0] for head in http_proxy.heads] == [
        f"CONNECT apiserver.test:{port} HTTP/1.1"
    ] * 2
    credentials = base64.b64encode(b"user:p@ss").decode()
    assert f"Proxy-Authorization: Basic {credentials}\r\n" in http_proxy.heads[0]
    assert "Proxy-Authorization" not in http_proxy.heads[1]
    assert raw.connections == 2  # one tunnel per connection, reused
    assert len(raw.requests) == 3


async def test_an_http_server_is_reached_through_the_proxy_with_absolute_urls(
    raw_server: StartServer, http_proxy: HttpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, port = await raw_server(serve_version)
    monkeypatch.setenv("HTTP_PROXY", http_proxy.url)
    async with KubeClient(ClientConfig(f"http://apiserver.test:{port}/prefix")) as client:
        assert await client.get("/version") == {"major": "1"}
    async with KubeClient(ClientConfig(f"http://127.0.0.1:{port}")) as client:
        assert await client.get("/version") == {"major": "1"}  # loopback: never proxied
    assert raw.requests[0].startswith(f"GET http://apiserver.test:{port}/prefix/version HTTP/1.1")
    assert raw.requests[1].startswith("GET /version HTTP/1.1")
    assert len(http_proxy.heads) == 1


async def test_a_proxy_refusing_the_tunnel_is_an_error_before_the_request_was_sent(
    raw_server: StartServer, apiserver_tls: tuple[ssl.SSLContext, str]
) -> None:
    async def refuse(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        w.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")

    raw, proxy_port = await raw_server(refuse)
    config = ClientConfig(
        "https://apiserver.test:6443",
        ca_pem=apiserver_tls[1],
        proxy_url=f"http://127.0.0.1:{proxy_port}",
    )
    async with KubeClient(config) as client:
        with pytest.raises(RequestNotSent, match="answered 407"):
            await client.request("GET", "/version", retry=False)
    assert raw.requests[0].startswith("CONNECT apiserver.test:6443 HTTP/1.1\r\n")


async def test_a_requests_time_limit_covers_its_wait_for_a_connection(
    raw_server: StartServer,
) -> None:
    release = asyncio.Event()

    async def serve(raw: RawServer, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        await release.wait()
        w.write(ok(b"{}"))
        await w.drain()

    raw, port = await raw_server(serve)
    pool = HttpPool(f"http://127.0.0.1:{port}", ssl_context=None, limit=1)
    busy = asyncio.create_task(pool.request("GET", "/busy", {}, None, 30))
    waiting = asyncio.create_task(pool.request("GET", "/waiting", {}, None, 0.2))
    done, _ = await asyncio.wait({waiting}, timeout=10)
    assert waiting in done  # timed out while the only connection was still busy
    with pytest.raises(TimeoutError):
        waiting.result()
    assert not busy.done()
    release.set()
    assert (await busy).status == 200
    await pool.close()
    assert [r.split()[1] for r in raw.requests] == ["/busy"]
