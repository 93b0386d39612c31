"""A TCP proxy whose link a test can stall, resume and cut, to put a network fault between
one client and the apiserver (TLS passes through untouched)::

    async with TcpProxy("127.0.0.1", apiserver_port) as proxy:
        config = dataclasses.replace(client_config, host=proxy.url("https"))
        ...
        proxy.stall()   # nothing goes through, connections stay open: a hung network
        proxy.cut()     # every open connection is reset, what was held is lost
        proxy.resume()  # traffic flows again
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["TcpProxy"]

log = logging.getLogger("customtask_sdk.testing.proxy")
_CHUNK = 65536


class TcpProxy:
    """Forwards every connection to ``target_host:target_port``; listens on ``port`` (0:
    any free one) of ``host``. Stalled, it forwards nothing either way (new connections
    are accepted and held too), as a hung network would; what it had read is delivered on
    :meth:`resume`, unless :meth:`cut` resets the connections first.
    """

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def stalled(self) -> bool:
        """Whether traffic is held (between :meth:`stall` and :meth:`resume`)."""
        return not self._flowing.is_set()

    @property
    def connections(self) -> int:
        """How many client connections are open through the proxy."""
        return len(self._links)

    def url(self, scheme: str = "https") -> str:
        """``scheme://host:port`` of the proxy (after :meth:`start`)."""
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen (``port`` is then the bound one)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        """Stop forwarding, on open and new connections alike, until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, starting with what was held."""
        self._flowing.set()

    def cut(self) -> None:
        """Reset every open connection at once (both sides); held bytes are dropped."""
        for link in list(self._links):
            link.cancel()

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
        self.cut()
        await asyncio.gather(*self._links, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        upstream: asyncio.StreamWriter | None = None
        pumps: list[asyncio.Task[None]] = []
        try:
            await self._flowing.wait()
            up_reader, upstream = await asyncio.open_connection(*self.target)
            pumps = [
                asyncio.create_task(self._pump(reader, upstream)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            # One side closed: close the other too (HTTP needs no half-open connections).
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except OSError as exc:
            log.debug("proxy could not connect to %s:%s: %s", *self.target, exc)
        except asyncio.CancelledError:
            pass  # cut: this task is the link, and ends here
        finally:
            self._links.discard(link)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for side in (writer, upstream):
                if side is not None:
                    side.transport.abort()  # a reset, dropping anything unsent

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy one direction until it ends (or fails)."""
        with contextlib.suppress(OSError):
            while True:
                await self._flowing.wait()
                data = await source.read(_CHUNK)
                if not data:
                    return
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
