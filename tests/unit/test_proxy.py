"""TcpProxy: forwards, holds while stalled, delivers on resume, drops on cut."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from customtask_sdk.testing.proxy import TcpProxy


class Echo:
    """A TCP echo server that records what it received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1024):
                self.received.append(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[TcpProxy, Echo]]:
    echo = Echo()
    echo.server = await asyncio.start_server(echo._serve, "127.0.0.1", 0)
    async with TcpProxy("127.0.0.1", echo.port) as it:
        yield it, echo
    echo.server.close()


async def send(proxy: TcpProxy, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_forwards_both_ways(proxy: tuple[TcpProxy, Echo]) -> None:
    it, _ = proxy
    reader, writer = await send(it, b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
    assert it.connections == 1
    writer.close()


@pytest.mark.parametrize("connect_while_stalled", [False, True])
async def test_a_stall_holds_traffic_until_resumed(
    proxy: tuple[TcpProxy, Echo], connect_while_stalled: bool
) -> None:
    it, echo = proxy
    if not connect_while_stalled:
        reader, writer = await send(it, b"open")
        await asyncio.wait_for(reader.readexactly(4), 10)
        it.stall()
        writer.write(b"held")
    else:
        it.stall()
        reader, writer = await send(it, b"held")
    assert it.stalled
    # Barrier: a round trip to the server beside the proxy (same loop) gives the proxy
    # every chance to forward what it holds.
    probe, direct = await asyncio.open_connection("127.0.0.1", echo.port)
    direct.write(b"probe")
    await asyncio.wait_for(probe.readexactly(5), 10)
    assert b"held" not in echo.received
    it.resume()
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"held"
    writer.close()
    direct.close()


async def test_a_cut_resets_the_connections_and_drops_what_was_held(
    proxy: tuple[TcpProxy, Echo],
) -> None:
    it, echo = proxy
    it.stall()
    reader, writer = await send(it, b"lost")
    it.cut()
    it.resume()
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), 10) == b""
    later, other = await send(it, b"next")
    assert await asyncio.wait_for(later.readexactly(4), 10) == b"next"  # the server had its chance
    assert echo.received == [b"next"]
    writer.close()
    other.close()
