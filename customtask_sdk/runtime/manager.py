"""The manager: runs controllers with leader election, probes, metrics and a clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from customtask_sdk.client import KubeClient
from customtask_sdk.reconciler import Reconciler
from customtask_sdk.reconciler.objects import ObjectReconciler
from customtask_sdk.runtime.controller import controller_for
from customtask_sdk.runtime.events import EventRecorder
from customtask_sdk.runtime.leader import LeaderElector, validate_lease_timing
from customtask_sdk.runtime.metrics import ControllerMetrics

__all__ = ["LeaderElection", "Manager"]

log = logging.getLogger("customtask_sdk.manager")


@dataclass(frozen=True)
class LeaderElection:
    """Leader election settings: one Lease per manager (name it after the controller).

    Raises:
        ValueError: unless ``0 < retry_period < renew_deadline < lease_duration``.
    """

    lease_name: str
    namespace: str = "default"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        validate_lease_timing(self.lease_duration, self.renew_deadline, self.retry_period)


class Manager:
    """Runs one or more reconcilers (of CustomRuns, or ``ObjectReconciler``s of any kind)
    until stopped.

    - Informers start at once on every replica, so a standby's cache is warm; workers
      start only while this replica leads (with ``leader_election``).
    - ``/healthz`` fails when a watch has gone quiet past its inactivity timeout,
      ``/readyz`` until every cache has synced, ``/metrics`` serves Prometheus metrics.
    - :meth:`run` returns after ``stop`` is set (SIGTERM in the CLI): the queues stop
      handing out work, in-flight reconciles then each reconciler's ``stop()`` get
      ``shutdown_grace`` seconds to finish (the rest are simply picked up again by the
      next leader: status is the only state), pending Events are flushed,
      the lease is released and connections closed.
    - ``workers``: concurrent reconciles of each reconciler (default: its own ``workers``).
    - When leadership is lost (not renewed by the renew deadline, or the elector failed)
      every reconcile and event write is cancelled at once, with no grace (each
      reconciler's ``stop()`` still runs), and :meth:`run` raises. The elector has a
      client (and connections) of its own.
    - A reconciler's ``start()`` that raises stops the manager; :meth:`run` raises it.
    """

    def __init__(
        self,
        client: KubeClient,
        reconcilers: Sequence[Reconciler[Any] | ObjectReconciler],
        *,
        namespace: str | None = None,
        workers: int | None = None,
        leader_election: LeaderElection | None = None,
        health_port: int | None = 8081,
        health_host: str = "0.0.0.0",
        events: bool = True,
        identity: str | None = None,
        shutdown_grace: float = 20.0,
    ) -> None:
        self.client = client
        self.identity = identity or default_identity()
        self.metrics = ControllerMetrics()
        if client.on_response is None:
            client.on_response = self.metrics.rest_request
        self.health_port = health_port
        self.health_host = health_host
        self.shutdown_grace = shutdown_grace
        self.events = (
            EventRecorder(client, "customtask-sdk", self.identity, metrics=self.metrics)
            if events
            else None
        )
        self.controllers = [
            controller_for(
                reconciler,
                client,
                namespace=namespace,
                workers=workers,
                events=self.events,
                metrics=self.metrics,
            )
            for reconciler in reconcilers
        ]
        self.elector = (
            LeaderElector(
                # Its own connection: workers holding every pooled one cannot delay a renew.
                KubeClient(client.configuration, max_connections=1),
                leader_election.namespace,
                leader_election.lease_name,
                self.identity,
                lease_duration=leader_election.lease_duration,
                renew_deadline=leader_election.renew_deadline,
                retry_period=leader_election.retry_period,
                on_lost=self._abort,
            )
            if leader_election
            else None
        )
        if self.elector is not None:
            self.elector.client.on_response = client.on_response
        self._runner: web.AppRunner | None = None
        # Cancelled at once when leadership is lost: the workers and the event writer.
        self._workers: list[asyncio.Task[None]] = []
        self._events_task: asyncio.Task[None] | None = None
        self._aborted = asyncio.Event()
        #: The port the health server listens on (useful with ``health_port=0``).
        self.bound_port: int | None = None

    @property
    def informers(self) -> list[Any]:
        """Every informer of every controller."""
        return [informer for c in self.controllers for informer in c.informers]

    def healthy(self) -> tuple[bool, str]:
        """Whether every watch is alive (answered within twice its inactivity timeout)."""
        now = time.monotonic()
        for informer in self.informers:
            quiet = now - informer.last_activity
            if informer.has_synced and quiet > 2 * informer.inactivity_timeout:
                return False, f"{informer.resource.plural}: no watch activity for {quiet:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Whether every cache has synced."""
        pending = [i.resource.plural for i in self.informers if not i.has_synced]
        return (not pending, "ok" if not pending else f"not synced: {', '.join(pending)}")

    async def _start_health_server(self) -> None:
        if self.health_port is None:
            return

        def probe(check: Any) -> Any:
            async def handler(request: web.Request) -> web.Response:
                ok, text = check()
                return web.Response(status=200 if ok else 500, text=text)

            return handler

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=self.metrics.exposition(), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/healthz", probe(self.healthy))
        app.router.add_get("/readyz", probe(self.ready))
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.health_host, self.health_port)
        await site.start()
        self.bound_port = self._runner.addresses[0][1]
        log.info("probes and metrics on port %s", self.bound_port)

    def _abort(self) -> None:
        """Leadership is gone: cancel every reconcile and event write now (no grace)."""
        for task in [*self._workers, *filter(None, [self._events_task])]:
            task.cancel()
        self._aborted.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or leadership is lost, which raises)."""
        stop = stop or asyncio.Event()
        self._aborted.clear()
        await self._start_health_server()
        background: list[asyncio.Task[Any]] = [
            asyncio.create_task(informer.run(), name=f"informer:{informer.resource.plural}")
            for informer in self.informers
        ]
        if self.events is not None:
            self._events_task = asyncio.create_task(self.events.run(), name="events")
            background.append(self._events_task)
        elector: asyncio.Task[None] | None = None
        workers: list[asyncio.Task[None]] = []
        stopping = asyncio.create_task(stop.wait())
        try:
            synced = asyncio.gather(*(i.synced.wait() for i in self.informers))
            await _first(stopping, synced)
            if self.elector is not None and not stop.is_set():
                elector = asyncio.create_task(self.elector.run(), name="leader")
                elector.add_done_callback(self._elector_ended)
                await _first(stopping, self._aborted.wait(), self.elector.leading.wait())
            if not stop.is_set() and not self._aborted.is_set():
                if self.elector is not None:
                    self.metrics.leader.labels(name=self.elector.name).set(1)
                log.info("starting %d controller(s)", len(self.controllers))
                workers = [asyncio.create_task(c.run_workers()) for c in self.controllers]
                self._workers = list(workers)
                ended = (
                    [asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)] if workers else []
                )
                await _first(stopping, self._aborted.wait(), *ended)
        finally:
            await self._shutdown(background, stopping, elector)
        for task in workers:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:  # a reconciler's start() failed
                raise error
        if self._aborted.is_set() and not stop.is_set():
            cause = None
            if elector is not None and elector.done() and not elector.cancelled():
                cause = elector.exception()  # None when it returned: leadership lost
            raise RuntimeError(
                "leader election ended (leadership lost, or the elector failed); exiting so "
                "a fresh replica can take over"
            ) from cause

    def _elector_ended(self, task: asyncio.Task[None]) -> None:
        """The elector ended (lost, or failed): no work may go on without it."""
        if not task.cancelled():
            self._abort()

    async def _shutdown(
        self,
        background: list[asyncio.Task[Any]],
        stopping: asyncio.Task[Any],
        elector: asyncio.Task[None] | None,
    ) -> None:
        log.info("shutting down")
        for controller in self.controllers:
            controller.queue.shutdown()
        workers, self._workers = self._workers, []
        if workers:  # if leadership is lost meanwhile, they are cancelled at once
            _done, pending = await asyncio.wait(workers, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.events is not None and not self._aborted.is_set():
            await self.events.flush(timeout=2.0)
        if elector is not None:
            elector.cancel()
            await asyncio.gather(elector, return_exceptions=True)
        if self.elector is not None:
            await self.elector.release()
            await self.elector.client.close()
            self.metrics.leader.labels(name=self.elector.name).set(0)
        for task in [*background, stopping]:
            task.cancel()
        await asyncio.gather(*background, stopping, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


async def _first(stopping: asyncio.Task[Any], *waits: Awaitable[Any]) -> None:
    """Wait until ``stopping`` or any of ``waits`` completes; cancel the rest of ``waits``."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def default_identity() -> str:
    """``$POD_NAME`` in a cluster, else ``hostname_random``."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
