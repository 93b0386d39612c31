import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Generator, Iterator
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["customtask_sdk.testing.pytest_plugin"]

#: Node tests that start nodes of their own: they need the machine to themselves, so they
#: run before any test that uses the session's ``node`` fixture (one node at a time).
OWN_NODES = "tests/node/test_node_lifecycle.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of ``OWN_NODES`` before the first other node test."""
    own = [item for item in items if item.nodeid.startswith(OWN_NODES)]
    rest = [item for item in items if not item.nodeid.startswith(OWN_NODES)]
    first_node = next(
        (i for i, item in enumerate(rest) if item.nodeid.startswith("tests/node/")), len(rest)
    )
    items[:] = [*rest[:first_node], *own, *rest[first_node:]]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI (``CI`` or ``CUSTOMTASK_SDK_REQUIRE_TESTBIN`` set) a skipped test fails: no
    test of this project may skip silently there."""
    from customtask_sdk.testing.pytest_plugin import _required  # registered by pytest_plugins

    report = yield
    if report.skipped and _required() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
    return report


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging(), which replaces the root logger's handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class HttpProxy:
    """An HTTP proxy on loopback: tunnels CONNECT, forwards absolute-form requests.

    Every host name it is asked for resolves to 127.0.0.1. ``heads`` holds the request
    head each client connection opened with (``CONNECT host:port ...`` for a tunnel).
    """

    def __init__(self) -> None:
        self.heads: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            method, target, _ = head.split(" ", 2)
            authority = target if method == "CONNECT" else urlsplit(target).netloc
            port = int(authority.rpartition(":")[2])
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", port)
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.write(head.encode("latin-1"))
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def http_proxy() -> AsyncIterator[HttpProxy]:
    """A running :class:`HttpProxy`."""
    proxy = HttpProxy()
    await proxy.start()
    yield proxy
    await proxy.close()
