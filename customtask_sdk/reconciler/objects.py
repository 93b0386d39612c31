"""Reconciling a kind that is not a CustomRun: the controller-runtime shape.

An :class:`ObjectReconciler` names its ``resource``, says which objects are its own
(:meth:`~ObjectReconciler.selects`, applied before anything is cached) and returns the
status it wants from :meth:`~ObjectReconciler.reconcile`. The SDK supplies the same
machinery as for CustomRuns: informer cache, queue, status writes (``/status`` only,
only when changed, guarded by ``resourceVersion``), leader election, metrics. The status
format, and the object's lifecycle, are the reconciler's.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from customtask_sdk.client import JSON, Resource
from customtask_sdk.reconciler.base import ReconcilerBase
from customtask_sdk.reconciler.lifecycle import (
    HookTimeout,
    Step,
    _limited,
    _stored_form,
    is_done,
)
from customtask_sdk.reconciler.outcome import RetryLater
from customtask_sdk.reconciler.run import OwnedLookup

__all__ = ["Object", "ObjectReconciler", "Result", "object_step"]


@dataclass(frozen=True)
class Result:
    """What one reconcile of an object decided.

    ``status``, when given, replaces the object's whole ``status`` (written only if it
    differs from the stored one; a key left out is removed). ``requeue_after``: look
    again by then even if nothing changes.
    """

    status: Mapping[str, Any] | None = None
    requeue_after: datetime.timedelta | None = None


@dataclass(frozen=True)
class Object:
    """One object handed to :meth:`ObjectReconciler.reconcile`: a private copy from the
    cache, the time of this reconcile, and the cached objects it owns."""

    obj: JSON
    now: datetime.datetime
    resource: Resource
    lookup: OwnedLookup | None = None

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        """``metadata.namespace``."""
        return str(self.obj["metadata"].get("namespace", ""))

    @property
    def uid(self) -> str:
        """``metadata.uid``."""
        return str(self.obj["metadata"].get("uid", ""))

    @property
    def spec(self) -> JSON:
        """``spec`` (``{}`` when absent)."""
        spec: JSON = self.obj.get("spec") or {}
        return spec

    @property
    def status(self) -> JSON:
        """The stored ``status`` (``{}`` when absent)."""
        status: JSON = self.obj.get("status") or {}
        return status

    def owned(self, resource: Resource) -> list[JSON]:
        """Cached objects of ``resource`` (one of ``owns``) owned by this object."""
        return [] if self.lookup is None else self.lookup(resource, self.uid)

    def owner_reference(self) -> JSON:
        """An ownerReference making a child owned (and garbage-collected) by this object."""
        return {
            "apiVersion": self.obj.get("apiVersion") or self.resource.api_version,
            "kind": self.resource.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


class ObjectReconciler(ReconcilerBase):
    """Subclass this to reconcile objects of any kind (PipelineRuns, your own CRD...)::

        class Delegated(ObjectReconciler):
            resource = PIPELINE_RUNS

            def selects(self, obj: JSON) -> bool:
                return obj.get("spec", {}).get("managedBy") == "example.dev/mine"

            async def reconcile(self, obj: Object) -> Result:
                ...
                return Result(status=new_status, requeue_after=timedelta(seconds=30))

    The contract: ``reconcile`` is called for each selected object that is not
    :meth:`finished`, on every change of it or of what it owns, and when asked to come
    back; never twice at once for one object. It must be idempotent. Raising
    :class:`RetryLater` (or any exception) calls it again with backoff. The SDK writes
    the status it returns and nothing else: no finalizers, no Events, no conditions of
    its own; the format is the reconciler's.
    """

    #: The kind reconciled (its status subresource is where results are written).
    resource: ClassVar[Resource]

    @property
    def name(self) -> str:
        """``plural.group``, how logs, metrics and the lease name this reconciler."""
        group = self.resource.api_version.rpartition("/")[0]
        return f"{self.resource.plural}.{group}" if group else self.resource.plural

    def selects(self, obj: JSON) -> bool:
        """Whether ``obj`` is this reconciler's; called on every listed and watched object
        before it is cached, so objects that are not are never kept in memory."""
        return True

    def finished(self, obj: JSON) -> bool:
        """Whether ``obj`` is done for good: never reconciled again, cached as a stub.
        Default: its ``Succeeded`` condition is ``True`` or ``False`` (Knative, Tekton)."""
        return is_done(obj)

    async def reconcile(self, obj: Object) -> Result:
        """Bring ``obj`` one step closer to what its spec asks, and return its status."""
        raise NotImplementedError(f"{type(self).__name__} must implement reconcile()")


async def object_step(
    reconciler: ObjectReconciler,
    obj: JSON,
    now: datetime.datetime,
    owned: OwnedLookup | None = None,
) -> Step:
    """Reconcile one object once: its ``status`` to write (only when changed), when to
    come back, or the error to retry with backoff."""
    if reconciler.finished(obj):
        return Step()
    view = Object(obj, now, reconciler.resource, owned)
    try:
        result = await _limited(reconciler, "reconcile", reconciler.reconcile(view))
    except (Exception, HookTimeout) as exc:
        failed = Step(error=exc)
        if isinstance(exc, RetryLater) and exc.after is not None:
            failed.retry_after = exc.after.total_seconds()
        return failed
    status = None
    if result.status is not None:
        desired = _stored_form(result.status)
        status = desired if desired != (obj.get("status") or {}) else None
    requeue = result.requeue_after.total_seconds() if result.requeue_after is not None else None
    return Step(status, None if requeue is None else max(0.0, requeue))
