"""Informer edge cases against a scripted fake apiserver (pagination, 410, stalls, drops)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from customtask_sdk.client import JSON, ClientConfig, KubeClient, Resource
from customtask_sdk.informer import Informer

PODS = Resource("", "v1", "pods", "Pod")
Script = Callable[[web.Request], Awaitable[web.StreamResponse]]
Call = tuple[str, JSON | None, JSON | None]


def obj(name: str, rv: str, *, owners: tuple[str, ...] = (), **fields: Any) -> JSON:
    metadata: JSON = {"name": name, "namespace": "ns", "resourceVersion": rv}
    metadata["managedFields"] = [{"manager": "kubectl"}]
    if owners:
        metadata["ownerReferences"] = [{"uid": uid, "kind": "CustomRun"} for uid in owners]
    return {"metadata": metadata, **fields}


def ev(type_: str, body: JSON) -> JSON:
    return {"type": type_, "object": body}


def bookmark(rv: str) -> JSON:
    return ev("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": rv}})


GONE = ev("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})


def page(items: list[JSON], rv: str, cont: str = "") -> Script:
    async def respond(request: web.Request) -> web.StreamResponse:
        meta = {"resourceVersion": rv, "continue": cont} if cont else {"resourceVersion": rv}
        return web.json_response({"kind": "PodList", "metadata": meta, "items": items})

    return respond


def status(code: int, reason: str, **headers: str) -> Script:
    async def respond(request: web.Request) -> web.StreamResponse:
        body = {"kind": "Status", "code": code, "reason": reason, "message": reason}
        return web.json_response(body, status=code, headers=headers)

    return respond


def stream(*events: JSON, then: str = "hold") -> Script:
    """Send ``events``, then ``hold`` the stream open silently, ``end`` it, or ``drop`` it."""

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        if then == "hold":
            await asyncio.Event().wait()
        elif then == "drop":
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
        return response

    return respond


def feed(queue: asyncio.Queue[JSON]) -> Script:
    """Stream events as the test puts them on ``queue``."""

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:
            event = await queue.get()
            await response.write(json.dumps(event).encode() + b"\n")

    return respond


class FakeApi:
    """Answers list requests with ``lists`` and watches with ``watches``, one per request.

    Watches beyond the script stay open silently; requests are recorded with their time.
    """

    def __init__(self, lists: list[Script], watches: list[Script] | None = None) -> None:
        self.lists = lists
        self.watches = watches or []
        self.list_queries: list[dict[str, str]] = []
        self.watch_queries: list[dict[str, str]] = []
        self.list_times: list[float] = []
        self.watch_times: list[float] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.path == "/api/v1/namespaces/ns/pods"
        if request.query.get("watch") == "true":
            self.watch_queries.append(dict(request.query))
            self.watch_times.append(time.monotonic())
            n = len(self.watch_queries) - 1
            return await (self.watches[n] if n < len(self.watches) else stream())(request)
        self.list_queries.append(dict(request.query))
        self.list_times.append(time.monotonic())
        n = min(len(self.list_queries), len(self.lists)) - 1
        return await self.lists[n](request)


Start = Callable[..., Awaitable[tuple[Informer, list[Call]]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Serve a FakeApi and run an Informer (namespace ``ns``) on it, recording handler calls."""
    runners: list[web.AppRunner] = []
    clients: list[KubeClient] = []
    tasks: list[asyncio.Task[None]] = []

    async def go(api: FakeApi, **kwargs: Any) -> tuple[Informer, list[Call]]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", api.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host = f"http://127.0.0.1:{runner.addresses[0][1]}"
        # No client-side retries: the informer's own recovery is under test.
        client = KubeClient(ClientConfig(host=host), retry_seconds=0)
        clients.append(client)
        informer = Informer(client, PODS, namespace="ns", **kwargs)
        calls: list[Call] = []
        informer.add_handler(lambda t, old, new: calls.append((t, old, new)))
        tasks.append(asyncio.create_task(informer.run()))
        assert await informer.wait_synced(2.0)
        return informer, calls

    yield go
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def rvs(calls: list[Call]) -> list[tuple[str, str | None, str | None]]:
    """Calls as (type, old name@rv, new name@rv)."""

    def short(o: JSON | None) -> str | None:
        return None if o is None else f"{o['metadata']['name']}@{o['metadata']['resourceVersion']}"

    return [(t, short(old), short(new)) for t, old, new in calls]


async def test_paginated_list_then_watch_from_the_lists_resource_version(start: Start) -> None:
    api = FakeApi(
        [page([obj("a", "3"), obj("b", "4")], "10", cont="p2"), page([obj("c", "5")], "10")]
    )
    informer, calls = await start(api, page_size=2, label_selector="app=x")
    assert informer.has_synced
    assert informer.lists == 1
    assert sorted(informer.keys()) == ["ns/a", "ns/b", "ns/c"]
    assert len(informer) == 3
    assert api.list_queries == [
        {"limit": "2", "labelSelector": "app=x"},
        {"limit": "2", "labelSelector": "app=x", "continue": "p2"},
    ]
    assert rvs(calls) == [("ADDED", None, "a@3"), ("ADDED", None, "b@4"), ("ADDED", None, "c@5")]
    a = informer.get("ns/a")
    assert a is not None
    assert "managedFields" not in a["metadata"]
    assert (a["apiVersion"], a["kind"]) == ("v1", "Pod")  # list items get their type
    assert informer.get("ns/zzz") is None

    await until(lambda: len(api.watch_queries) == 1)
    assert informer.watch_connected
    query = api.watch_queries[0]
    assert query["resourceVersion"] == "10"
    assert query["allowWatchBookmarks"] == "true"
    assert query["labelSelector"] == "app=x"
    assert 300 <= int(query["timeoutSeconds"]) <= 600

    late: list[Call] = []
    informer.add_handler(lambda t, old, new: late.append((t, old, new)))
    assert sorted(rvs(late)) == rvs(calls)  # a late handler gets the cache replayed


async def test_watch_events_update_the_store_and_call_handlers(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    events: asyncio.Queue[JSON] = asyncio.Queue()
    api = FakeApi([page([obj("a", "1"), obj("b", "2")], "2")], [feed(events)])
    informer, calls = await start(api)

    def broken(t: str, old: JSON | None, new: JSON | None) -> None:
        raise RuntimeError("handler bug")

    informer.add_handler(broken)
    del calls[:]
    for event in [
        ev("MODIFIED", obj("a", "3", spec={"x": 1})),
        ev("MODIFIED", obj("a", "3", spec={"x": 1})),  # same resourceVersion: ignored
        ev("MODIFIED", {"no": "metadata"}),  # bad: logged and skipped
        ev("ADDED", obj("c", "4")),
        ev("DELETED", obj("b", "5")),
        ev("DELETED", obj("never-seen", "6")),
        bookmark("7"),
    ]:
        events.put_nowait(event)
    await until(lambda: informer.events == 5)
    assert rvs(calls) == [
        ("MODIFIED", "a@1", "a@3"),
        ("ADDED", None, "c@4"),
        ("DELETED", "b@2", None),
    ]
    assert sorted(informer.keys()) == ["ns/a", "ns/c"]
    a = informer.get("ns/a")
    assert a is not None
    assert a["spec"] == {"x": 1}
    assert "managedFields" not in a["metadata"]
    assert "skipping a bad watch event" in caplog.text
    assert "pods in namespace ns" in caplog.text
    assert "handler bug" in caplog.text
    assert informer.lists == 1


async def test_410_error_event_relists_diffs_and_resumes_from_the_new_list(start: Start) -> None:
    api = FakeApi(
        [
            page([obj("a", "1"), obj("b", "2")], "5"),
            page([obj("a", "6"), obj("c", "8")], "9"),  # b vanished, c appeared
        ],
        [stream(ev("MODIFIED", obj("a", "6")), GONE, then="end")],
    )
    informer, calls = await start(api)
    await until(lambda: len(api.watch_queries) == 2)
    assert informer.relists_after_gone == 1
    assert informer.lists == 2
    assert [q["resourceVersion"] for q in api.watch_queries] == ["5", "9"]
    assert rvs(calls)[2:] == [
        ("MODIFIED", "a@1", "a@6"),
        ("ADDED", None, "c@8"),
        ("DELETED", "b@2", None),  # what the list lacks is deleted once it is complete
    ]
    assert sorted(informer.keys()) == ["ns/a", "ns/c"]


async def test_410_status_on_watch_start_relists(start: Start) -> None:
    api = FakeApi(
        [page([obj("a", "1")], "5"), page([obj("a", "1"), obj("b", "7")], "8")],
        [status(410, "Expired")],
    )
    informer, calls = await start(api)
    await until(lambda: len(api.watch_queries) == 2)
    assert [q["resourceVersion"] for q in api.watch_queries] == ["5", "8"]
    assert informer.relists_after_gone == 1
    assert rvs(calls) == [("ADDED", None, "a@1"), ("ADDED", None, "b@7")]


async def test_bookmarks_advance_the_resume_resource_version(start: Start) -> None:
    api = FakeApi(
        [page([obj("a", "1")], "5")], [stream(bookmark("20"), bookmark("25"), then="end")]
    )
    informer, calls = await start(api)
    await until(lambda: len(api.watch_queries) == 2)
    assert [q["resourceVersion"] for q in api.watch_queries] == ["5", "25"]
    assert (informer.lists, informer.watch_restarts, informer.events) == (1, 1, 0)
    assert len(calls) == 1


async def test_a_silent_watch_is_restarted_after_the_inactivity_timeout(start: Start) -> None:
    api = FakeApi([page([], "5")], [stream(ev("ADDED", obj("a", "11")), then="hold")])
    informer, calls = await start(api, inactivity_timeout=0.3)
    await until(lambda: len(api.watch_queries) == 2)
    assert api.watch_queries[1]["resourceVersion"] == "11"
    assert api.watch_times[1] - api.watch_times[0] >= 0.3
    assert (informer.lists, informer.watch_restarts) == (1, 1)
    assert rvs(calls) == [("ADDED", None, "a@11")]
    activity = informer.last_activity
    assert time.monotonic() - activity < 0.3
    assert informer.watch_connected


async def test_429_on_list_waits_for_retry_after(start: Start) -> None:
    api = FakeApi(
        [status(429, "TooManyRequests", **{"Retry-After": "1"}), page([obj("a", "1")], "5")]
    )
    informer, _ = await start(api)
    assert len(api.list_times) == 2
    assert api.list_times[1] - api.list_times[0] >= 0.95
    assert informer.keys() == ["ns/a"]


async def test_a_dropped_connection_resumes_from_the_last_resource_version(start: Start) -> None:
    api = FakeApi(
        [page([], "5")],
        [stream(ev("ADDED", obj("a", "11")), ev("MODIFIED", obj("a", "12")), then="drop")],
    )
    informer, calls = await start(api)
    await until(lambda: len(api.watch_queries) == 2)
    assert api.watch_queries[1]["resourceVersion"] == "12"
    assert informer.lists == 1
    assert rvs(calls) == [("ADDED", None, "a@11"), ("MODIFIED", "a@11", "a@12")]


async def test_server_errors_resume_and_forbidden_relists(start: Start) -> None:
    api = FakeApi(
        [page([obj("a", "1")], "5"), page([obj("a", "1")], "6")],
        [status(500, "InternalError"), status(403, "Forbidden")],
    )
    informer, calls = await start(api)
    await until(lambda: len(api.watch_queries) == 3)
    assert [q["resourceVersion"] for q in api.watch_queries] == ["5", "5", "6"]
    assert informer.lists == 2
    assert len(calls) == 1  # the re-list found nothing new


async def test_transform_filters_objects_and_drops_ones_that_stop_matching(start: Start) -> None:
    seen_managed_fields: list[bool] = []

    def wanted(o: JSON) -> JSON | None:
        seen_managed_fields.append("managedFields" in o["metadata"])
        return o if o.get("spec", {}).get("kind") == "Wanted" else None

    want, other = {"kind": "Wanted"}, {"kind": "Other"}
    api = FakeApi(
        [page([obj("a", "1", spec=want), obj("b", "2", spec=other)], "5")],
        [
            stream(
                ev("MODIFIED", obj("a", "6", spec=other)),
                ev("ADDED", obj("c", "7", spec=other)),
                ev("MODIFIED", obj("b", "8", spec=want)),
                ev("DELETED", obj("c", "9", spec=other)),
            )
        ],
    )
    informer, calls = await start(api, transform=wanted)
    await until(lambda: informer.events == 4)
    assert rvs(calls) == [("ADDED", None, "a@1"), ("DELETED", "a@1", None), ("ADDED", None, "b@8")]
    assert informer.keys() == ["ns/b"]
    assert not any(seen_managed_fields)


async def test_owner_index_follows_changes(start: Start) -> None:
    events: asyncio.Queue[JSON] = asyncio.Queue()
    api = FakeApi(
        [page([obj("p1", "1", owners=("u1",)), obj("p2", "2", owners=("u1", "u2"))], "5")],
        [feed(events)],
    )
    informer, _ = await start(api)
    assert sorted(informer.index_by_owner("u1")) == ["ns/p1", "ns/p2"]
    assert informer.index_by_owner("u2") == ["ns/p2"]
    events.put_nowait(ev("MODIFIED", obj("p1", "6", owners=("u2",))))
    events.put_nowait(ev("DELETED", obj("p2", "7", owners=("u1", "u2"))))
    events.put_nowait(ev("ADDED", obj("p3", "8")))
    await until(lambda: informer.events == 3)
    assert informer.index_by_owner("u1") == []
    assert informer.index_by_owner("u2") == ["ns/p1"]
    assert informer._by_owner == {"u2": {"ns/p1"}}  # no empty sets left behind


async def test_update_if_newer_caches_own_writes_without_events(start: Start) -> None:
    events: asyncio.Queue[JSON] = asyncio.Queue()
    api = FakeApi(
        [page([obj("a", "5"), obj("b", "6")], "10"), page([obj("a", "13")], "14")],
        [feed(events)],
    )
    informer, calls = await start(api)
    del calls[:]
    assert informer.update_if_newer(obj("a", "12", spec={"mine": True}))
    a = informer.get("ns/a")
    assert a is not None
    assert a["spec"] == {"mine": True}
    assert "managedFields" not in a["metadata"]
    assert not informer.update_if_newer(obj("a", "11"))  # older than the cached one
    assert informer.update_if_newer(obj("d", "15"))  # a create the watch has not shown yet
    events.put_nowait(ev("DELETED", obj("b", "11")))
    events.put_nowait(ev("MODIFIED", obj("a", "12", spec={"mine": True})))  # our own write
    await until(lambda: informer.events == 2)
    assert not informer.update_if_newer(obj("b", "9"))  # the watch saw it deleted since
    assert rvs(calls) == [("DELETED", "b@6", None)]

    # A re-list (snapshot at 14) keeps d, written after it: the new watch will report it.
    events.put_nowait(GONE)
    await until(lambda: informer.lists == 2 and informer.watch_connected)
    assert sorted(informer.keys()) == ["ns/a", "ns/d"]
    assert rvs(calls)[1:] == [("MODIFIED", "a@12", "a@13")]

    # Opaque (non-numeric) resourceVersions are simply replaced.
    assert informer.update_if_newer(obj("x", "rv-b"))
    assert informer.update_if_newer(obj("x", "rv-a"))
    x = informer.get("ns/x")
    assert x is not None
    assert x["metadata"]["resourceVersion"] == "rv-a"
    assert len(calls) == 2


async def test_wait_synced_times_out_without_a_list() -> None:
    informer = Informer(KubeClient(ClientConfig(host="http://127.0.0.1:1")), PODS)
    assert not informer.has_synced
    assert not await informer.wait_synced(0.01)
