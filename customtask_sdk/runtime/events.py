"""Kubernetes Events on CustomRuns, sent in the background so reconciles never wait."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging

from customtask_sdk.client import JSON, ApiError, KubeClient, Resource

__all__ = ["EventRecorder"]

log = logging.getLogger("customtask_sdk.events")
_EVENTS = Resource("", "v1", "events", "Event")


class EventRecorder:
    """Records Events about objects (``kubectl describe`` shows them).

    :meth:`record` never blocks: events go to a bounded buffer that a background task
    drains; when the apiserver cannot keep up the newest events are dropped (and counted
    in ``dropped``) rather than slowing the controller.
    """

    def __init__(
        self, client: KubeClient, component: str, instance: str, *, buffer: int = 1000
    ) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.dropped = 0
        self._pending: asyncio.Queue[JSON] = asyncio.Queue(maxsize=buffer)

    def record(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        """Queue an Event of ``type_`` (``Normal``/``Warning``) about ``obj``."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "tekton.dev/v1beta1"),
                "kind": obj.get("kind", "CustomRun"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._pending.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        """Send queued events until cancelled."""
        while True:
            event = await self._pending.get()
            namespace = event["metadata"]["namespace"]
            try:
                await self.client.create(_EVENTS.path(namespace), event)
            except (ApiError, OSError, TimeoutError) as exc:
                log.debug("event %s not recorded: %s", event["reason"], exc)
            finally:
                self._pending.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) until queued events are sent."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout)
