"""Lease-based leader election (``coordination.k8s.io/v1``), as client-go does it."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

from customtask_sdk.client import JSON, ApiError, ConflictError, KubeClient, NotFoundError, Resource

__all__ = ["LEASES", "LeaderElector"]

log = logging.getLogger("customtask_sdk.leader")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds a Lease while this replica leads; stands by (watching it expire) otherwise.

    A lease is taken over when its holder has not renewed it for ``lease_duration``
    seconds *as observed here* (so clock skew between replicas does not matter). A leader
    that cannot renew within ``renew_deadline`` steps down. :meth:`release` hands the lease
    over at once on a graceful shutdown.
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
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        #: Set while this replica holds the lease.
        self.leading = asyncio.Event()
        #: Set when leadership, once held, is lost (the manager then stops working).
        self.lost = asyncio.Event()
        self._observed: tuple[Any, float] | None = None  # (holder record, monotonic seen)
        self._lease: JSON | None = None
        self._last_renew = 0.0

    @property
    def _path(self) -> str:
        return LEASES.path(self.namespace, self.name)

    def _spec(self, previous: JSON | None) -> JSON:
        now = _now()
        old = (previous or {}).get("spec") or {}
        taking_over = old.get("holderIdentity") != self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": now if taking_over else old.get("acquireTime", now),
            "renewTime": now,
            "leaseTransitions": int(old.get("leaseTransitions") or 0)
            + (1 if old and taking_over else 0),
        }

    async def _try_acquire_or_renew(self) -> bool:
        lease = await self.client.get_or_none(self._path)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            self._lease = await self.client.create(LEASES.path(self.namespace), body)
            return True
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"))
        if self._observed is None or self._observed[0] != record:
            self._observed = (record, time.monotonic())
        holder = spec.get("holderIdentity")
        expired = time.monotonic() - self._observed[1] > float(
            spec.get("leaseDurationSeconds") or self.lease_duration
        )
        if holder and holder != self.identity and not expired:
            return False
        lease["spec"] = self._spec(lease)
        self._lease = await self.client.replace(self._path, lease)
        return True

    async def run(self) -> None:
        """Acquire, then keep renewing; returns once leadership is lost."""
        while True:
            try:
                acquired = await self._try_acquire_or_renew()
            except (ApiError, OSError, TimeoutError) as exc:
                if not isinstance(exc, ConflictError):
                    log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                acquired = False
            now = time.monotonic()
            if acquired:
                self._last_renew = now
                if not self.leading.is_set():
                    log.info("became leader (lease %s/%s)", self.namespace, self.name)
                    self.leading.set()
            elif self.leading.is_set() and now - self._last_renew > self.renew_deadline:
                log.error("lost leadership (lease %s/%s)", self.namespace, self.name)
                self.leading.clear()
                self.lost.set()
                return
            await asyncio.sleep(self.retry_period)

    async def release(self) -> None:
        """Give the lease up (holder cleared) so a standby takes over without waiting."""
        if not self.leading.is_set() or self._lease is None:
            return
        self.leading.clear()
        lease = dict(self._lease)
        lease["spec"] = dict(lease.get("spec") or {}) | {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": _now(),
        }
        try:
            await self.client.replace(self._path, lease)
        except (ConflictError, NotFoundError):
            pass
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
