"""The class integrators subclass: their task's logic, and nothing else."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, get_args, get_origin

from pydantic import BaseModel

from customtask_sdk.client import JSON, KubeClient, Resource
from customtask_sdk.reconciler.outcome import Outcome
from customtask_sdk.reconciler.owned import Owned
from customtask_sdk.reconciler.run import Params, Run

__all__ = ["Clock", "EventSink", "NoParams", "Reconciler", "ReconcilerBase", "SystemClock"]

P = TypeVar("P", bound=BaseModel)


class Clock(Protocol):
    """Where a reconciler reads the time; inject a fake one in unit tests."""

    def now(self) -> datetime.datetime:
        """The current time, timezone-aware (UTC)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime.datetime:
        """``datetime.now(UTC)``."""
        return datetime.datetime.now(datetime.UTC)


class EventSink(Protocol):
    """Where Events go: the manager's ``EventRecorder`` (buffered, never blocking)."""

    def record(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj``."""
        ...


class NoParams(Params):
    """The params model of a task that takes none (any param is rejected)."""


class ReconcilerBase:
    """What every reconciler has, whatever it reconciles: its API client, Events, owned
    kinds, a time limit per call, a clock, and ``start``/``stop`` hooks.

    Subclass :class:`Reconciler` (CustomRuns) or
    :class:`~customtask_sdk.reconciler.objects.ObjectReconciler` (any other kind), not this.
    """

    #: Kinds this reconciler creates, owned by its objects: their changes wake the owner. A
    #: ``Resource`` caches all its objects; ``Owned`` only the selected ones and fields.
    owns: ClassVar[Sequence[Resource | Owned]] = ()
    #: Time limit of each call to ``reconcile`` (and ``on_cancel``, ``on_timeout``,
    #: ``finalize``): past it the call is cancelled and counts as an error (retried with
    #: backoff), so a hung call never holds its run, and a cancellation or timeout of
    #: that run is acted on within this time. Long work belongs outside the call
    #: (start it, return ``Running``, look again later).
    reconcile_timeout: ClassVar[datetime.timedelta] = datetime.timedelta(seconds=60)
    #: Concurrent reconciles when the operator gives no ``--workers`` (``Manager(workers=)``).
    #: Raise it for a reconciler whose calls mostly wait on the apiserver.
    workers: ClassVar[int] = 16
    #: Where the SDK and ``Run.now`` read the time (pass a fake one to ``__init__`` in tests).
    clock: Clock = SystemClock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reconcile_timeout <= datetime.timedelta(0):
            raise ValueError(f"{cls.__name__}.reconcile_timeout must be positive")
        if cls.workers < 1:
            raise ValueError(f"{cls.__name__}.workers must be at least 1")

    _client: KubeClient | None = None
    _events: EventSink | None = None
    _cache_write: Callable[[Resource, JSON], None] | None = None

    def __init__(self, clock: Clock | None = None) -> None:
        if clock is not None:
            self.clock = clock

    @property
    def client(self) -> KubeClient:
        """The API client of the controller running this reconciler, to create and delete
        what a run owns (set ``metadata.ownerReferences`` to ``[run.owner_reference()]``).

        Raises:
            RuntimeError: before a ``Controller`` (or ``customtask-sdk run``) runs it.
        """
        if self._client is None:
            raise RuntimeError(
                f"{type(self).__name__}.client is set when a Controller runs the reconciler;"
                " in unit tests, call attach(client) first"
            )
        return self._client

    def attach(
        self,
        client: KubeClient,
        events: EventSink | None = None,
        cache_write: Callable[[Resource, JSON], None] | None = None,
    ) -> None:
        """Give the reconciler its API client, Event recorder and a way into the cache of
        owned objects (the Controller running it does this; ``events=None`` when Events are
        off)."""
        self._client = client
        self._events = events
        self._cache_write = cache_write

    def remember(self, resource: Resource, obj: JSON) -> None:
        """Put an owned object this reconciler just wrote (what a create, update or patch
        returned) in the controller's cache, so ``run.owned`` shows the write at once
        instead of after its watch event (the SDK does this for the runs' own status).

        Ignored if the cache already holds that version or a later one (or the watch has
        seen the object deleted since), and outside a controller. No reconcile is queued.

        Raises:
            KeyError: ``resource`` is not in ``owns``.
        """
        if self._cache_write is not None:
            self._cache_write(resource, obj)

    def record_event(
        self, obj: JSON, type_: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        """Record a Kubernetes Event about ``obj`` (``run.obj``, or an object it owns).

        Returns at once: Events go through the manager's recorder, the one the SDK uses
        for the runs' own Events (bounded buffer, drops counted in
        ``customtask_events_dropped_total``). Does nothing when Events are off
        (``--no-events``, ``Manager(events=False)``) or before :meth:`attach`.
        """
        if self._events is not None:
            self._events.record(obj, type_, reason, message)

    async def start(self) -> None:
        """Start background work (a notification sender...); default: nothing.

        Called once before the workers start, i.e. when this replica begins to lead.
        Raising stops the manager with that error, and :meth:`stop` is not called: undo
        what was started before raising.
        """

    async def stop(self) -> None:
        """End every background task :meth:`start` or a reconcile started; default: nothing.

        Called once after the workers stopped (on shutdown, once in-flight reconciles
        finished; at once when leadership is lost), before pending Events are flushed,
        so Events recorded here are sent. Cancelled past ``reconcile_timeout``.
        """

    @property
    def name(self) -> str:
        """How logs, metrics and the lease name this reconciler."""
        raise NotImplementedError


class Reconciler(ReconcilerBase, Generic[P]):
    """Subclass this to implement a custom task. The SDK owns the CustomRun contract.

    Declare which runs are yours and the model of their input, then implement
    :meth:`reconcile`::

        class Wait(Reconciler[WaitParams]):
            api_version = "wait.customtask.dev/v1alpha1"
            kind = "Wait"

            async def reconcile(self, run: Run[WaitParams]) -> Outcome:
                ...

    The params model is taken from the type argument (or set ``params_model``). The SDK
    starts the run, validates its input (a bad one fails the run with ``InvalidParams``),
    enforces its timeout, handles cancellation and retries, and writes the status.
    """

    #: ``customRef.apiVersion`` (or ``customSpec.apiVersion``) of the runs to reconcile.
    api_version: ClassVar[str]
    #: ``customRef.kind`` (or ``customSpec.kind``) of the runs to reconcile.
    kind: ClassVar[str]
    #: The pydantic model of the input; inferred from ``Reconciler[Model]`` when unset.
    params_model: ClassVar[type[BaseModel]] = NoParams
    #: Whether ``customRef.name`` may name an object; if False such runs fail clearly.
    accepts_named_ref: ClassVar[bool] = False
    #: Largest total size of a run's results in bytes (etcd caps a whole object at ~1.5 MiB).
    max_result_bytes: ClassVar[int] = 1_000_000

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "params_model" in cls.__dict__:
            return
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Reconciler:
                (model,) = get_args(base)
                if isinstance(model, type) and issubclass(model, BaseModel):
                    cls.params_model = model

    @property
    def name(self) -> str:
        """``Kind.apiVersion``, how logs, metrics and the lease name this reconciler."""
        return f"{self.kind}.{self.api_version}"

    async def reconcile(self, run: Run[P]) -> Outcome:
        """Advance one attempt of ``run`` and say where it stands.

        Return :class:`Running` (optionally with ``requeue_after``), :class:`Succeeded`
        (with results) or :class:`Failed`. Raise :class:`RunFailed` to fail with a
        message for a person, :class:`RetryLater` (or any exception) to be called again
        with backoff. Called again for the same run on every change and requeue, so it
        must be idempotent.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement reconcile()")

    async def on_cancel(self, run: Run[P]) -> Mapping[str, Any] | None:
        """Clean up a run being cancelled (``spec.status: RunCancelled``); default: nothing.

        Raising retries the cleanup later; the run is marked cancelled once it returns.
        Return a mapping to replace ``status.extraFields`` in that final status (as an
        outcome's ``extra_fields`` does); ``None`` keeps what is stored.
        """
        return None

    async def on_timeout(self, run: Run[P]) -> Mapping[str, Any] | None:
        """Clean up an attempt that timed out, before it is failed or retried.

        Return a mapping to replace ``status.extraFields`` of the failed attempt (as an
        outcome's ``extra_fields`` does; kept in ``retriesStatus`` when it is retried);
        ``None`` keeps what is stored.
        """
        return None

    async def finalize(self, run: Run[P]) -> None:
        """Release external resources of a run that finished or is being deleted.

        Override it and the SDK adds a finalizer to each run before the first reconcile
        and removes it after this returns, so cleanup happens even if the run is deleted.
        A finishing run has its final status written first, so cleanup can never change
        its outcome. Called again if the finalizer could not be removed (a conflict, a
        crash), so make it idempotent. Not called for a run whose input does not
        validate: such a run fails before ``reconcile`` ever sees it.
        """
