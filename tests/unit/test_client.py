"""KubeClient edge cases against a small fake apiserver (429, 5xx, 409, watch errors)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from customtask_sdk.client import (
    CUSTOM_RUNS,
    ClientConfig,
    ConflictError,
    GoneError,
    InvalidError,
    KubeClient,
    NotFoundError,
    Resource,
    ServerError,
    TooManyRequestsError,
)
from customtask_sdk.client.errors import error_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Start = Callable[[Handler], Awaitable[KubeClient]]


def status(code: int, reason: str, message: str = "", **headers: str) -> web.Response:
    body = {"kind": "Status", "code": code, "reason": reason, "message": message}
    return web.json_response(body, status=code, headers=headers)


@pytest.fixture
async def fake_api() -> AsyncIterator[Start]:
    """Start a fake apiserver with one handler; returns a KubeClient pointed at it."""
    runners: list[web.AppRunner] = []
    clients: list[KubeClient] = []

    async def start(handler: Handler) -> KubeClient:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        client = KubeClient(ClientConfig(host=f"http://127.0.0.1:{port}"), retry_seconds=5)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()


async def test_429_is_retried_after_the_servers_retry_after(fake_api: Start) -> None:
    calls: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return status(429, "TooManyRequests", "slow down", **{"Retry-After": "1"})
        return web.json_response({"kind": "CustomRun", "ok": True})

    client = await fake_api(handler)
    assert (await client.get("/x"))["ok"] is True
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.95


async def test_5xx_is_retried_then_succeeds(fake_api: Start) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            return status(503, "ServiceUnavailable")
        return web.json_response({"done": calls})

    client = await fake_api(handler)
    assert await client.get("/x") == {"done": 3}


async def test_5xx_gives_up_after_the_retry_budget(fake_api: Start) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return status(500, "InternalError", "etcd is down")

    client = await fake_api(handler)
    client._retry_seconds = 0.3
    with pytest.raises(ServerError, match="etcd is down"):
        await client.get("/x")


@pytest.mark.parametrize(
    ("code", "reason", "error"),
    [
        (404, "NotFound", NotFoundError),
        (409, "Conflict", ConflictError),
        (422, "Invalid", InvalidError),
    ],
)
async def test_client_errors_are_typed_and_not_retried(
    fake_api: Start, code: int, reason: str, error: type[Exception]
) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return status(code, reason, "nope")

    client = await fake_api(handler)
    with pytest.raises(error):
        await client.patch("/x", {"a": 1})
    assert calls == 1


async def test_patch_sends_an_explicit_content_type_and_body(fake_api: Start) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen["content_type"] = request.headers["Content-Type"]
        seen["body"] = await request.json()
        seen["query"] = dict(request.query)
        return web.json_response({})

    client = await fake_api(handler)
    await client.patch("/x", {"status": {"a": 1}})
    assert seen["content_type"] == "application/merge-patch+json"
    assert seen["body"] == {"status": {"a": 1}}
    await client.apply(
        CUSTOM_RUNS, {"metadata": {"name": "n", "namespace": "ns"}}, "me", dry_run=True
    )
    assert seen["content_type"] == "application/apply-patch+yaml"
    assert seen["query"] == {"fieldManager": "me", "force": "true", "dryRun": "All"}


async def test_watch_streams_events_and_raises_gone_on_a_410_error_event(fake_api: Start) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["watch"] == "true"
        response = web.StreamResponse()
        await response.prepare(request)
        events = [
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
        ]
        for event in events:
            await response.write(json.dumps(event).encode() + b"\n")
        return response

    client = await fake_api(handler)
    seen: list[str] = []

    async def consume() -> None:
        async for event in client.watch("/x", {"resourceVersion": "1"}):
            seen.append(event["type"])

    with pytest.raises(GoneError):
        await consume()
    assert seen == ["ADDED", "BOOKMARK"]


async def test_watch_times_out_when_the_stream_stalls(fake_api: Start) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"type":"ADDED","object":{}}\n')
        await asyncio.Event().wait()  # never answers again
        return response

    client = await fake_api(handler)
    seen: list[str] = []

    async def consume() -> None:
        async for event in client.watch("/x", inactivity_timeout=0.3):
            seen.append(event["type"])

    with pytest.raises(TimeoutError):
        await consume()
    assert seen == ["ADDED"]


async def test_list_all_follows_continue_tokens(fake_api: Start) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        page = request.query.get("continue", "")
        if not page:
            return web.json_response(
                {"metadata": {"continue": "p2", "resourceVersion": "1"}, "items": [{"n": 1}]}
            )
        return web.json_response({"metadata": {"resourceVersion": "9"}, "items": [{"n": 2}]})

    client = await fake_api(handler)
    result = await client.list_all("/x", {"limit": "1"})
    assert result["items"] == [{"n": 1}, {"n": 2}]
    assert result["metadata"]["resourceVersion"] == "9"


def test_error_for_reads_status_bodies_and_survives_garbage() -> None:
    err = error_for(409, b'{"reason":"AlreadyExists","message":"taken"}')
    assert isinstance(err, ConflictError)
    assert err.already_exists
    assert not err.retryable
    throttled = error_for(429, b"", retry_after="3")
    assert isinstance(throttled, TooManyRequestsError)
    assert throttled.retry_after == 3.0
    assert error_for(429, b"", retry_after="soon").retry_after == 1.0  # type: ignore[attr-defined]
    garbled = error_for(502, b"<html>bad gateway</html>")
    assert isinstance(garbled, ServerError)
    assert "bad gateway" in garbled.message


def test_resource_paths() -> None:
    assert CUSTOM_RUNS.path() == "/apis/tekton.dev/v1beta1/customruns"
    assert CUSTOM_RUNS.path("ns", "run", "status") == (
        "/apis/tekton.dev/v1beta1/namespaces/ns/customruns/run/status"
    )
    pods = Resource("", "v1", "pods", "Pod")
    assert pods.api_version == "v1"
    assert pods.path("ns") == "/api/v1/namespaces/ns/pods"
    nodes = Resource("", "v1", "nodes", "Node", namespaced=False)
    assert nodes.path("ignored", "n1") == "/api/v1/nodes/n1"


def answer(code: int, retry_after: str | None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return status(code, "Failing", "try again", **headers)


REQUESTS = {
    # unguarded writes: sent again after they were applied, they would apply twice
    "create": lambda c: c.create("/x", {"metadata": {"generateName": "run-"}}),
    "replace": lambda c: c.replace("/x", {"metadata": {"name": "a"}}),
    "patch": lambda c: c.patch("/x", {"status": {"a": 1}}),
    # reads, deletes, server-side applies, and writes that carry a resourceVersion precondition
    "get": lambda c: c.get("/x"),
    "apply": lambda c: c.patch("/x", {"metadata": {"name": "a"}}, "apply"),
    "delete": lambda c: c.delete("/x"),
    "guarded replace": lambda c: c.replace("/x", {"metadata": {"resourceVersion": "5"}}),
    "guarded merge patch": lambda c: c.patch("/x", {"metadata": {"resourceVersion": "5"}}),
    "guarded json patch": lambda c: c.patch(
        "/x",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
            {"op": "replace", "path": "/status/a", "value": 1},
        ],
        "json",
    ),
}
UNGUARDED = ("create", "replace", "patch")


@pytest.mark.parametrize(
    ("code", "retry_after"), [(429, "0"), (503, "0"), (500, None), (503, None), (504, "0")]
)
@pytest.mark.parametrize("request_", REQUESTS)
async def test_an_error_answer_is_retried_only_if_a_second_send_cannot_apply_twice(
    fake_api: Start, request_: str, code: int, retry_after: str | None
) -> None:
    # 429, and 503 with Retry-After (an apiserver shutting down), say it was not processed.
    not_processed = code == 429 or (code == 503 and retry_after is not None)
    sent_again = not_processed or request_ not in UNGUARDED
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls > 1:
            return web.json_response({"done": True})
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        return status(code, "Failing", "try again", **headers)

    client = await fake_api(handler)
    if sent_again:
        assert await REQUESTS[request_](client) == {"done": True}
    else:
        with pytest.raises(ServerError if code >= 500 else TooManyRequestsError):
            await REQUESTS[request_](client)
    assert calls == (2 if sent_again else 1)
