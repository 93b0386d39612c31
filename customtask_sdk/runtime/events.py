"""Kubernetes Events on CustomRuns, sent in the background so reconciles never wait."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging

from customtask_sdk.client import JSON, ApiError, ForbiddenError, KubeClient, Resource
from customtask_sdk.runtime.metrics import ControllerMetrics

__all__ = ["EventRecorder"]

log = logging.getLogger("customtask_sdk.events")
_EVENTS = Resource("", "v1", "events", "Event")


class EventRecorder:
    """Records Events about objects (``kubectl describe`` shows them).

    :meth:`record` never blocks: events go to a bounded buffer that a background task
    drains; when the apiserver cannot keep up the newest events are dropped rather than
    slowing the controller. Events the apiserver refuses (a 403 without RBAC for events,
    say) or that fail otherwise are dropped too. Each drop is counted in ``dropped`` and in
    ``customtask_events_dropped_total{reason}`` (``buffer_full``, ``rejected``, ``error``);
    each kind of failure is logged at warning level once, then at debug level.
    """

    def __init__(
        self,
        client: KubeClient,
        component: str,
        instance: str,
        *,
        buffer: int = 1000,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.metrics = metrics
        self.dropped = 0
        self._pending: asyncio.Queue[JSON] = asyncio.Queue(maxsize=buffer)
        self._warned: set[str] = set()

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
            self._drop("buffer_full", event, "the buffer is full: the apiserver is too slow")

    async def run(self) -> None:
        """Send queued events until cancelled; no failure to send one ends it."""
        while True:
            event = await self._pending.get()
            try:
                await self.client.create(_EVENTS.path(event["metadata"]["namespace"]), event)
            except ApiError as exc:
                hint = " (grant create on events)" if isinstance(exc, ForbiddenError) else ""
                self._drop("rejected", event, f"{exc}{hint}", kind=f"{exc.status}")
            except Exception as exc:  # a broken connection, a bug: never end the task
                self._drop("error", event, repr(exc), kind=type(exc).__name__)
            finally:
                self._pending.task_done()

    def _drop(self, reason: str, event: JSON, why: str, kind: str = "") -> None:
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.event_dropped(reason)
        first = f"{reason}:{kind}" not in self._warned
        self._warned.add(f"{reason}:{kind}")
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "event %s on %s not recorded: %s%s",
            event["reason"],
            event["involvedObject"]["name"],
            why,
            "; further such failures are logged at debug level" if first else "",
        )

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout``) until queued events are sent."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout)
