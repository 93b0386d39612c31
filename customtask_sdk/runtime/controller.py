"""One reconciler at work: informers feed a queue, workers run the contract, status is
written through ``/status`` with optimistic concurrency, only when it changed."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from customtask_sdk.client import (
    CUSTOM_RUNS,
    JSON,
    ApiError,
    ConflictError,
    KubeClient,
    NotFoundError,
    Resource,
)
from customtask_sdk.informer import Informer
from customtask_sdk.queue import QueueMetrics, QueueShutDown, WorkQueue
from customtask_sdk.reconciler import Reconciler
from customtask_sdk.reconciler.base import EventSink, ReconcilerBase
from customtask_sdk.reconciler.lifecycle import Step, finalize_run, is_done, matches, step
from customtask_sdk.reconciler.objects import ObjectReconciler, object_step
from customtask_sdk.reconciler.owned import owned_kinds
from customtask_sdk.runtime.metrics import ControllerMetrics

__all__ = ["Controller", "ObjectController", "controller_for"]

log = logging.getLogger("customtask_sdk.controller")


def _key(obj: JSON) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


_STUB_METADATA = ("name", "namespace", "resourceVersion", "finalizers")


def _finished_stub(obj: JSON) -> JSON:
    """What the cache keeps of a finished run, which is never reconciled again: its key,
    version, finalizers and outcome (about a fifth of the whole object's memory)."""
    meta = obj["metadata"]
    return {
        "metadata": {k: meta[k] for k in _STUB_METADATA if k in meta},
        "status": {
            "conditions": [
                {k: sys.intern(str(c[k])) for k in ("type", "status", "reason") if k in c}
                for c in (obj.get("status") or {}).get("conditions") or ()
            ]
        },
    }


def status_patch(current: JSON, desired: JSON) -> JSON:
    """A JSON merge patch turning ``current`` into ``desired``: the whole of ``desired``,
    with ``None`` for every key it lacks at any depth (a merge patch merges nested maps,
    so without them a key dropped from ``extraFields`` would stay stored forever)."""
    patch: JSON = {k: None for k in current if k not in desired}
    for k, value in desired.items():
        old = current.get(k)
        nested = isinstance(value, dict) and isinstance(old, dict)
        patch[k] = status_patch(old, value) if nested else value  # type: ignore[arg-type]
    return patch


class Controller:
    """Runs one :class:`Reconciler` over the CustomRuns it matches.

    Informers (CustomRuns, and each kind in ``reconciler.owns``) keep a shared cache and
    enqueue keys; ``workers`` tasks (default: ``reconciler.workers``) take keys off the
    queue (never the same key twice at once) and run
    :func:`~customtask_sdk.reconciler.step`. Reads come from the cache: a reconcile makes
    no GET; a status write's answer updates the cache at once.
    """

    #: The kind reconciled: the main informer's, and whose ``/status`` is written.
    resource: Resource = CUSTOM_RUNS
    reconciler: ReconcilerBase

    def __init__(
        self,
        reconciler: ReconcilerBase,
        client: KubeClient,
        *,
        namespace: str | None = None,
        workers: int | None = None,
        events: EventSink | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.reconciler = reconciler
        reconciler.attach(client, events, self._cache_owned)
        self.client = client
        self.workers = reconciler.workers if workers is None else workers
        self.name = reconciler.name
        self.metrics = metrics
        self.events = events
        queue_metrics: QueueMetrics | None = metrics.queue(self.name) if metrics else None
        self.queue: WorkQueue[str] = WorkQueue(self.name, metrics=queue_metrics)
        self.runs = Informer(client, self.resource, namespace=namespace, transform=self._mine)
        self.runs.add_handler(self._on_run)
        self.owned = {
            kind.resource: Informer(
                client,
                kind.resource,
                namespace=namespace,
                label_selector=kind.selector,
                field_selector=kind.field_selector,
                transform=kind.project,
            )
            for kind in owned_kinds(reconciler.owns)
        }
        for informer in self.owned.values():
            informer.add_handler(self._on_owned)
        self._clock: Callable[[], Any] = reconciler.clock.now
        #: The finalizer held on runs while ``finalize`` has work to do (if overridden).
        self.finalizer = self._finalizer_name()

    def _finalizer_name(self) -> str | None:
        reconciler = self.reconciler
        assert isinstance(reconciler, Reconciler)
        if type(reconciler).finalize is Reconciler.finalize:
            return None
        return f"{reconciler.api_version.split('/')[0]}/{reconciler.kind.lower()}-cleanup"

    def _done(self, obj: JSON) -> bool:
        """Whether ``obj`` is finished: never reconciled (nor written) again."""
        return is_done(obj)

    async def _step(self, obj: JSON, now: Any) -> Step:
        assert isinstance(self.reconciler, Reconciler)
        return await step(self.reconciler, obj, now, self._lookup_owned)

    @property
    def informers(self) -> list[Informer]:
        """Every informer this controller runs (CustomRuns first)."""
        return [self.runs, *self.owned.values()]

    def _selects(self, obj: JSON) -> bool:
        """Whether ``obj`` is this controller's (others are never cached)."""
        assert isinstance(self.reconciler, Reconciler)
        return matches(obj, self.reconciler.api_version, self.reconciler.kind)

    def _mine(self, obj: JSON) -> JSON | None:
        if not self._selects(obj):
            return None
        if self._done(obj) and not self._holds_finalizer(obj):
            return _finished_stub(obj)
        return obj

    def _holds_finalizer(self, obj: JSON) -> bool:
        return self.finalizer is not None and self.finalizer in (
            obj["metadata"].get("finalizers") or ()
        )

    def _on_run(self, event: str, old: JSON | None, new: JSON | None) -> None:
        if new is not None and (not self._done(new) or self._holds_finalizer(new)):
            self.queue.add(_key(new))

    def _owned_informer(self, resource: Resource) -> Informer:
        informer = self.owned.get(resource)
        if informer is None:
            raise KeyError(f"{resource.kind} is not in {type(self.reconciler).__name__}.owns")
        return informer

    def _lookup_owned(self, resource: Resource, uid: str) -> list[JSON]:
        informer = self._owned_informer(resource)
        found = (informer.get(key) for key in informer.index_by_owner(uid))
        return [obj for obj in found if obj is not None]

    def _cache_owned(self, resource: Resource, obj: JSON) -> None:
        self._owned_informer(resource).update_if_newer(obj)

    def _on_owned(self, event: str, old: JSON | None, new: JSON | None) -> None:
        obj = new or old
        if obj is None:
            return
        namespace = obj["metadata"].get("namespace")
        for ref in obj["metadata"].get("ownerReferences") or ():
            if ref.get("kind") == self.resource.kind and namespace:
                self.queue.add(f"{namespace}/{ref['name']}")

    async def run_workers(self) -> None:
        """``reconciler.start()``, then process the queue with ``workers`` concurrent tasks
        until it shuts down or this is cancelled, then ``reconciler.stop()``.

        Each hook gets ``reconcile_timeout``; a failing ``start`` raises (no worker
        runs), a failing ``stop`` is logged.
        """
        limit = self.reconciler.reconcile_timeout.total_seconds()
        async with asyncio.timeout(limit):
            await self.reconciler.start()
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.workers):
                    group.create_task(self._worker())
        finally:
            try:
                async with asyncio.timeout(limit):
                    await self.reconciler.stop()
            except Exception:  # the workers' own outcome (or cancellation) matters more
                log.exception("%s.stop() failed", type(self.reconciler).__name__)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.process(key)
            except Exception:  # never let one run take a worker down
                log.exception("reconcile of %s failed unexpectedly", key, extra={"run": key})
                self.queue.add_rate_limited(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        """Reconcile one run by key, from the cache, and write what changed."""
        obj = self.runs.get(key)
        if obj is None or (self.finalizer is None and self._done(obj)):
            self.queue.forget(key)
            return
        if self.finalizer is not None:
            obj = await self._handle_finalizer(key, obj)
            if obj is None:  # done, or requeued with backoff
                return
        started = time.monotonic()
        now = self._clock()
        result = await self._step(obj, now)
        if result.requeue_after is not None:  # by then at the latest, whatever happens next
            spent = (self._clock() - now).total_seconds()
            self.queue.add_after(key, max(0.0, result.requeue_after - spent))
        outcome = "success"
        written = None
        if result.status is not None:
            written = await self._write_status(key, obj, result.status)
            if written is None:
                outcome = "conflict"  # nothing happened: no events, reconcile again
            else:
                if self.events is not None:
                    for event in result.events:
                        self.events.record(written, event.type, event.reason, event.message)
                if result.error is None and self._done(written):
                    reason = written["status"]["conditions"][-1].get("reason")
                    log.info("run finished: %s", reason, extra={"run": key})
        if outcome == "conflict":
            pass  # the write requeued the run, to reconcile against what it re-read
        elif result.error is not None:
            outcome = "error"
            log.warning(
                "reconcile of %s will be retried: %r",
                key,
                result.error,
                extra={"run": key},
                exc_info=not isinstance(result.error, ApiError | ConnectionError),
            )
            if result.retry_after is not None:
                self.queue.add_after(key, result.retry_after)
            else:
                self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
            if result.requeue_after is not None:
                outcome = "requeue_after"
        if written is not None and self._done(written) and self._holds_finalizer(written):
            await self._finalize(key, written)  # the outcome is stored: now clean up
        if self.metrics is not None:
            self.metrics.reconciled(self.name, outcome, time.monotonic() - started)

    async def _handle_finalizer(self, key: str, obj: JSON) -> JSON | None:
        """Add the finalizer to a live run; finalize a deleted or finished one that holds it.

        Returns the run to reconcile, or ``None`` when there is nothing more to do now.
        """
        deleting = obj["metadata"].get("deletionTimestamp") is not None
        if self._holds_finalizer(obj):
            if deleting or self._done(obj):  # e.g. a crash between the last write and cleanup
                if await self._finalize(key, obj):
                    self.queue.forget(key)
                return None
            return obj
        if deleting or self._done(obj):
            self.queue.forget(key)
            return None
        finalizers = [*(obj["metadata"].get("finalizers") or ()), self.finalizer]
        return await self._patch_finalizers(key, obj, finalizers)

    async def _finalize(self, key: str, obj: JSON) -> bool:
        """Run ``reconciler.finalize``, then drop the finalizer; False if that must wait
        (the run is then requeued with backoff, and finalized again)."""
        assert isinstance(self.reconciler, Reconciler)  # only CustomRuns hold a finalizer
        try:
            await finalize_run(self.reconciler, obj, self._clock(), self._lookup_owned)
        except Exception:
            log.exception("finalize failed; will retry", extra={"run": key})
            self.queue.add_rate_limited(key)
            return False
        kept = [f for f in obj["metadata"].get("finalizers") or () if f != self.finalizer]
        return await self._patch_finalizers(key, obj, kept) is not None

    async def _patch_finalizers(self, key: str, obj: JSON, finalizers: list[Any]) -> JSON | None:
        meta = obj["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers}}
        return await self._guarded_patch(
            key, obj, self.resource.path(meta["namespace"], meta["name"]), body
        )

    async def _guarded_patch(self, key: str, obj: JSON, path: str, body: JSON) -> JSON | None:
        """Patch with ``body``'s resourceVersion as precondition and cache the answer.

        Returns ``None`` if the run is gone, or after a conflict: the run is then re-read
        into the cache (so the next reconcile starts from the truth) and requeued with
        backoff. Nothing is ever overwritten.
        """
        try:
            patched = await self.client.patch(path, body)
        except ConflictError:
            log.info("write conflicted; re-reading", extra={"run": key})
            await self._reread(key, obj)
            self.queue.add_rate_limited(key)
            return None
        except NotFoundError:
            return None
        self.runs.update_if_newer(patched)
        return patched

    async def _reread(self, key: str, obj: JSON) -> None:
        meta = obj["metadata"]
        fresh = await self.client.get_or_none(self.resource.path(meta["namespace"], meta["name"]))
        if fresh is not None:
            self.runs.update_if_newer(fresh)

    async def _write_status(self, key: str, obj: JSON, desired: JSON) -> JSON | None:
        """Merge-patch ``/status`` into ``desired``; ``None`` if it did not land."""
        meta = obj["metadata"]
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": status_patch(obj.get("status") or {}, desired),
        }
        path = self.resource.path(meta["namespace"], meta["name"], "status")
        written = await self._guarded_patch(key, obj, path, body)
        if written is not None and self.metrics is not None:
            self.metrics.status_written(self.name)
        return written


class ObjectController(Controller):
    """Runs one :class:`~customtask_sdk.reconciler.objects.ObjectReconciler` over the
    objects of its ``resource`` it selects: the same cache, queue, workers, guarded
    ``/status`` writes and metrics as for CustomRuns; objects it does not select are
    dropped before they are cached."""

    reconciler: ObjectReconciler

    def __init__(self, reconciler: ObjectReconciler, client: KubeClient, **kwargs: Any) -> None:
        self.resource = reconciler.resource
        super().__init__(reconciler, client, **kwargs)

    def _finalizer_name(self) -> str | None:
        return None

    def _selects(self, obj: JSON) -> bool:
        return self.reconciler.selects(obj)

    def _done(self, obj: JSON) -> bool:
        return self.reconciler.finished(obj)

    async def _step(self, obj: JSON, now: Any) -> Step:
        return await object_step(self.reconciler, obj, now, self._lookup_owned)


def controller_for(
    reconciler: Reconciler[Any] | ObjectReconciler, client: KubeClient, **kwargs: Any
) -> Controller:
    """The controller that runs ``reconciler``: a :class:`Controller` for CustomRuns, an
    :class:`ObjectController` for any other kind."""
    if isinstance(reconciler, ObjectReconciler):
        return ObjectController(reconciler, client, **kwargs)
    return Controller(reconciler, client, **kwargs)
