"""Prometheus metrics under controller-runtime's names, so existing dashboards work."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ControllerMetrics"]

_RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_QUEUE_BUCKETS = tuple(10.0**e for e in range(-8, 2))  # client-go: 1e-8 to 10 s


class _QueueMetrics:
    """The ``workqueue_*`` series of one queue (a :class:`~customtask_sdk.queue.QueueMetrics`)."""

    def __init__(self, metrics: ControllerMetrics, name: str) -> None:
        self._adds = metrics.queue_adds.labels(name=name)
        self._depth = metrics.queue_depth.labels(name=name)
        self._latency = metrics.queue_latency.labels(name=name)
        self._work = metrics.queue_work.labels(name=name)
        self._retries = metrics.queue_retries.labels(name=name)

    def on_add(self) -> None:
        self._adds.inc()

    def on_depth(self, depth: int) -> None:
        self._depth.set(depth)

    def on_queue_latency(self, seconds: float) -> None:
        self._latency.observe(seconds)

    def on_work_duration(self, seconds: float) -> None:
        self._work.observe(seconds)

    def on_retry(self) -> None:
        self._retries.inc()


class ControllerMetrics:
    """All series of one manager, in their own registry (served at ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[Any, ...], Any] = {}
        r = self.registry
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.status_writes = Counter(
            "customtask_status_writes_total",
            "CustomRun status writes per controller",
            ["controller"],
            registry=r,
        )
        self.queue_adds = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=r
        )
        self.queue_latency = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.queue_work = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            ["name"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.queue_retries = Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            ["name"],
            registry=r,
        )
        self.rest_requests = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code and method",
            ["code", "method"],
            registry=r,
        )
        self.events_dropped = Counter(
            "customtask_events_dropped_total",
            "Kubernetes Events not recorded, by reason (buffer_full, rejected, error)",
            ["reason"],
            registry=r,
        )
        self.leader = Gauge(
            "leader_election_master_status",
            "Whether this replica leads (1) or stands by (0)",
            ["name"],
            registry=r,
        )

    def queue(self, name: str) -> _QueueMetrics:
        """The hooks a work queue calls."""
        return _QueueMetrics(self, name)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled series, cached (``labels()`` is too slow for the hot path)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def reconciled(self, controller: str, result: str, seconds: float) -> None:
        """Record one reconcile: ``success``, ``error``, ``requeue_after`` or ``conflict``."""
        self._child(self.reconcile_total, controller, result).inc()
        if result == "error":
            self._child(self.reconcile_errors, controller).inc()
        self._child(self.reconcile_time, controller).observe(seconds)

    def rest_request(self, method: str, code: int) -> None:
        """Count one API answer (the client's ``on_response`` hook)."""
        self._child(self.rest_requests, str(code), method).inc()

    def status_written(self, controller: str) -> None:
        """Count one status write."""
        self._child(self.status_writes, controller).inc()

    def event_dropped(self, reason: str) -> None:
        """Count one Event not recorded."""
        self._child(self.events_dropped, reason).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
