"""Waiting for objects to reach a state, by watching (no polling loops)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from customtask_sdk.client import JSON, GoneError, KubeClient, Resource

__all__ = ["condition", "wait_deleted", "wait_for"]


def condition(obj: JSON, type_: str = "Succeeded") -> JSON | None:
    """The status condition of ``type_`` (``Succeeded`` by default), or ``None``."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            found: JSON = cond
            return found
    return None


async def _versions(
    client: KubeClient, resource: Resource, namespace: str | None, name: str
) -> AsyncIterator[JSON | None]:
    """Each version of one object as it changes (``None`` while it does not exist),
    by list then watch, re-listing after a 410 or a silent watch."""
    selector = {"fieldSelector": f"metadata.name={name}"}
    while True:
        page = await client.get(resource.path(namespace), selector)
        items: list[JSON] = page.get("items") or []
        yield items[0] if items else None
        params = dict(selector, resourceVersion=page["metadata"]["resourceVersion"])
        try:
            async for event in client.watch(resource.path(namespace), params):
                if event["type"] in ("ADDED", "MODIFIED"):
                    yield event["object"]
                elif event["type"] == "DELETED":
                    yield None
        except (GoneError, TimeoutError):
            continue  # re-list and watch again


async def wait_for(
    client: KubeClient,
    resource: Resource,
    namespace: str | None,
    name: str,
    predicate: Callable[[JSON], bool],
    timeout: float = 30.0,
) -> JSON:
    """Return the object once ``predicate(obj)`` holds, watching it for changes.

    Raises ``TimeoutError`` naming the object and its last seen status.
    """
    last: JSON | None = None

    async def watch() -> JSON:
        nonlocal last
        async for obj in _versions(client, resource, namespace, name):
            if obj is not None:
                last = obj
                if predicate(obj):
                    return obj
        raise AssertionError("unreachable: the watch loops until cancelled")

    try:
        return await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        state = "<object not seen>" if last is None else last.get("status", "<no status yet>")
        raise TimeoutError(
            f"{resource.kind} {namespace}/{name} did not reach the expected state within "
            f"{timeout}s; last status: {state}"
        ) from None


async def wait_deleted(
    client: KubeClient,
    resource: Resource,
    namespace: str | None,
    name: str,
    timeout: float = 30.0,
) -> None:
    """Return once the object is gone (watching for its deletion)."""

    async def watch() -> None:
        async for obj in _versions(client, resource, namespace, name):
            if obj is None:
                return

    try:
        await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        raise TimeoutError(
            f"{resource.kind} {namespace}/{name} still exists after {timeout}s"
        ) from None
