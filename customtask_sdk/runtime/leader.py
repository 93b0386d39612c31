"""Lease-based leader election (``coordination.k8s.io/v1``), as client-go does it.

The guarantee: the leader stops leading ``renew_deadline`` seconds after the *start* of
its last successful renew, at the latest; a standby takes over only once the lease's
record has not changed for ``lease_duration`` seconds since *it saw* that renew, which
was after the renew started. So with ``renew_deadline < lease_duration`` the old leader
has stopped before the standby starts, whatever the network does, provided clocks run
at the same rate (their offsets do not matter: each replica measures on its own clock).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
import time
from collections.abc import Callable

from customtask_sdk.client import JSON, ApiError, ConflictError, KubeClient, NotFoundError, Resource

__all__ = ["LEASES", "LeaderElector", "validate_lease_timing"]

log = logging.getLogger("customtask_sdk.leader")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_lease_timing(
    lease_duration: float, renew_deadline: float, retry_period: float
) -> None:
    """Raise ``ValueError`` unless ``0 < retry_period < renew_deadline < lease_duration``.

    ``renew_deadline < lease_duration`` is what keeps two replicas from leading at once;
    ``retry_period < renew_deadline`` gives a leader more than one try before it steps down.
    """
    if not 0 < retry_period < renew_deadline < lease_duration:
        raise ValueError(
            "leader election needs 0 < retry_period < renew_deadline < lease_duration "
            f"(got retry_period={retry_period:g}, renew_deadline={renew_deadline:g}, "
            f"lease_duration={lease_duration:g}): a leader must give up before a standby "
            "may take over"
        )


class LeaderElector:
    """Holds a Lease while this replica leads; stands by (watching it expire) otherwise.

    A standby takes the lease over once its record has not changed for the lease's
    ``leaseDurationSeconds`` *as observed here*. The leader renews every
    ``retry_period``; each attempt (requests included) ends by ``renew_deadline`` after the
    start of the last successful one, and is never retried past it. Then it steps down:
    ``leading`` is cleared, ``lost`` is set and ``on_lost`` called at once, before
    :meth:`run` returns. Give it a client of its own (busy workers must not delay a
    renew). :meth:`release` hands the lease over at once on a graceful shutdown.

    Raises:
        ValueError: unless ``0 < retry_period < renew_deadline < lease_duration``.
    """

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        validate_lease_timing(lease_duration, renew_deadline, retry_period)
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._ref = f"{namespace}/{name}"
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_lost = on_lost
        #: Set while this replica holds the lease.
        self.leading = asyncio.Event()
        #: Set when leadership, once held, is lost (the manager then stops working).
        self.lost = asyncio.Event()
        self._observed: tuple[str, float] | None = None  # (lease record, monotonic seen)
        self._lease: JSON | None = None
        self._renewed_at = 0.0  # monotonic start of the last successful attempt
        #: The holder seen in the last lease read (``None``: nobody).
        self.holder: str | None = None

    @property
    def _path(self) -> str:
        return LEASES.path(self.namespace, self.name)

    @property
    def deadline(self) -> float:
        """When (``time.monotonic()``) leadership ends unless a renew succeeds before."""
        return self._renewed_at + self.renew_deadline

    def _spec(self, previous: JSON | None) -> JSON:
        now = _now()
        old = (previous or {}).get("spec") or {}
        taking_over = old.get("holderIdentity") != self.identity
        return {
            "holderIdentity": self.identity,
            # Rounded up: a standby must never wait less than this leader's lease_duration.
            "leaseDurationSeconds": math.ceil(self.lease_duration),
            "acquireTime": now if taking_over else old.get("acquireTime", now),
            "renewTime": now,
            "leaseTransitions": int(old.get("leaseTransitions") or 0)
            + (1 if old and taking_over else 0),
        }

    async def _call(
        self, method: str, path: str, deadline: float, body: JSON | None = None
    ) -> JSON:
        """One request, not retried, with a timeout of what is left until ``deadline``."""
        left = max(deadline - time.monotonic(), 0.0)
        return await self.client.request(method, path, body=body, timeout=left, retry=False)

    async def _try_acquire_or_renew(self, deadline: float) -> bool:
        try:
            lease: JSON | None = await self._call("GET", self._path, deadline)
        except NotFoundError:
            lease = None
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            self._lease = await self._call("POST", LEASES.path(self.namespace), deadline, body)
            self.holder = self.identity
            return True
        spec = lease.get("spec") or {}
        record = json.dumps(spec, sort_keys=True)
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, time.monotonic())
        holder = spec.get("holderIdentity")
        self.holder = holder or None
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = time.monotonic() - self._observed[1] > duration
        if holder and holder != self.identity and not expired:
            return False
        lease["spec"] = self._spec(lease)
        self._lease = await self._call("PUT", self._path, deadline, lease)
        self.holder = self.identity
        return True

    async def _attempt(self, deadline: float) -> bool:
        """Try once to acquire or renew, giving up at ``deadline``; any failure is False."""
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                return await self._try_acquire_or_renew(deadline)
        except ConflictError:
            return False  # another replica wrote the lease first
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("lease %s: %s", self._ref, exc or type(exc).__name__)
        except Exception:  # e.g. an answer that is not JSON: a failed attempt, nothing more
            log.exception("lease %s: unexpected error", self._ref)
        return False

    async def run(self) -> None:
        """Acquire, then keep renewing; returns (or raises) once leadership is lost.

        However it ends while leading, except by cancellation (the owner's graceful
        stop), leadership is given up first: ``leading`` cleared, ``lost`` set, ``on_lost``
        called.
        """
        try:
            await self._acquire()
            await self._renew()
        except asyncio.CancelledError:
            self.leading.clear()  # the owner stops the work itself before cancelling
            raise
        finally:
            if self.leading.is_set():
                self._step_down()

    async def _acquire(self) -> None:
        while True:
            started = time.monotonic()
            if await self._attempt(started + self.renew_deadline):
                self._renewed_at = started
                log.info("became leader (lease %s)", self._ref)
                self.leading.set()
                return
            await asyncio.sleep(self.retry_period)

    async def _renew(self) -> None:
        while True:
            pause = min(self.retry_period, self.deadline - time.monotonic())
            if pause > 0:  # never yield to the workers once the deadline has passed
                await asyncio.sleep(pause)
            started = time.monotonic()
            if started >= self.deadline:
                log.error(
                    "lost leadership: lease %s not renewed within %gs",
                    self._ref,
                    self.renew_deadline,
                )
                return
            if await self._attempt(self.deadline):
                self._renewed_at = started
            elif self.holder not in (None, self.identity):
                log.error("lost leadership: lease %s taken over by %s", self._ref, self.holder)
                return

    def _step_down(self) -> None:
        self.leading.clear()
        self.lost.set()
        if self.on_lost is not None:
            self.on_lost()

    async def release(self) -> None:
        """Give the lease up (holder cleared) so a standby takes over without waiting.

        Only while it is still held (before the renew deadline); call it after the work
        has stopped and :meth:`run` has been cancelled.
        """
        deadline = self.deadline
        if self._lease is None or time.monotonic() >= deadline or self.lost.is_set():
            return
        self.leading.clear()
        lease = dict(self._lease)
        lease["spec"] = dict(lease.get("spec") or {}) | {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": _now(),
        }
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                await self._call("PUT", self._path, deadline, lease)
        except (ConflictError, NotFoundError):
            pass
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("could not release lease %s: %s", self._ref, exc)
        self._lease = None
