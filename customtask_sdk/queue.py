"""Rate-limited, delaying work queue for controllers, modelled on client-go's workqueue.

A key is never handed out to two consumers at once: adding a key that is being processed
marks it for another round, which starts when the current holder calls :meth:`WorkQueue.done`.
Every operation is O(1) or O(log n); delayed adds share one heap and one loop timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

__all__ = ["NoopQueueMetrics", "QueueMetrics", "QueueShutDown", "WorkQueue"]

K = TypeVar("K", bound=Hashable)

# Largest exponent for which 2.0**n is a finite float; caps the backoff computation.
_MAX_EXPONENT = 1023
# Stale heap entries tolerated (beyond twice the live ones) before the heap is rebuilt.
_COMPACT_SLACK = 64


class QueueShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue has been shut down."""


class QueueMetrics(Protocol):
    """Receives queue events; backs the ``workqueue_*`` Prometheus metrics."""

    def on_add(self) -> None:
        """Count an accepted (not deduplicated) add: ``workqueue_adds_total``."""

    def on_depth(self, depth: int) -> None:
        """Report the number of ready keys: ``workqueue_depth``."""

    def on_queue_latency(self, seconds: float) -> None:
        """Observe the time from ready to handed out: ``workqueue_queue_duration_seconds``."""

    def on_work_duration(self, seconds: float) -> None:
        """Observe the time from handed out to done: ``workqueue_work_duration_seconds``."""

    def on_retry(self) -> None:
        """Count a rate-limited re-add: ``workqueue_retries_total``."""


class NoopQueueMetrics:
    """A :class:`QueueMetrics` that records nothing."""

    def on_add(self) -> None:
        """Ignore an add."""

    def on_depth(self, depth: int) -> None:
        """Ignore a depth change."""

    def on_queue_latency(self, seconds: float) -> None:
        """Ignore a queue latency."""

    def on_work_duration(self, seconds: float) -> None:
        """Ignore a work duration."""

    def on_retry(self) -> None:
        """Ignore a retry."""


class _TokenBucket:
    """Overall rate limit, as golang.org/x/time/rate's ``Limiter.Reserve``."""

    def __init__(self, qps: float, burst: int, now: float) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def reserve(self, now: float) -> float:
        """Take one token and return how long to wait until it is available."""
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self._burst, self._tokens + elapsed * self._qps) - 1.0
        self._last = now
        return max(0.0, -self._tokens / self._qps)


class WorkQueue(Generic[K]):
    """Deduplicating FIFO of keys with delayed and rate-limited adds.

    Consumers loop on ``key = await queue.get()`` and must call ``queue.done(key)`` when
    finished. ``add_after`` and ``add_rate_limited`` need a running event loop.
    """

    def __init__(
        self,
        name: str,
        *,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
        metrics: QueueMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a queue.

        ``base_delay``/``max_delay`` (seconds) shape the per-key exponential backoff;
        ``qps``/``burst`` the overall token bucket. ``clock`` is a monotonic time source
        for backoff and metrics.
        """
        if base_delay < 0 or max_delay < base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if qps <= 0 or burst < 1:
            raise ValueError("need qps > 0 and burst >= 1")
        self.name = name
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._metrics: QueueMetrics = metrics if metrics is not None else NoopQueueMetrics()
        self._clock = clock
        self._bucket = _TokenBucket(qps, burst, clock())
        self._failures: dict[K, int] = {}
        # Ready keys in FIFO order; ``_ready`` maps each to the time it became ready.
        self._queue: deque[K] = deque()
        self._ready: dict[K, float] = {}
        # Keys being processed, mapped to the time they were handed out.
        self._processing: dict[K, float] = {}
        # Keys added while being processed; re-queued by ``done``.
        self._requeue: set[K] = set()
        # Delayed adds: the live heap entry per key; superseded entries are skipped lazily.
        self._delayed: dict[K, tuple[float, int, K]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutting_down = False

    def __len__(self) -> int:
        """Return the number of ready keys (not delayed, not being processed)."""
        return len(self._queue)

    @property
    def processing_count(self) -> int:
        """Number of keys handed out and not yet done."""
        return len(self._processing)

    @property
    def delayed_count(self) -> int:
        """Number of keys with a pending delayed add."""
        return len(self._delayed)

    @property
    def shutting_down(self) -> bool:
        """Whether :meth:`shutdown` has been called."""
        return self._shutting_down

    def add(self, key: K) -> None:
        """Enqueue ``key`` unless it is already waiting; ignored after shutdown."""
        if self._shutting_down or key in self._ready or key in self._requeue:
            return
        self._metrics.on_add()
        if key in self._processing:
            self._requeue.add(key)
        else:
            self._push(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds; an earlier pending deadline for it wins.

        The delayed add is independent of immediate adds: it still fires if ``key`` is added
        (or handed out) meanwhile, and is deduplicated if ``key`` is still waiting then.
        """
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        current = self._delayed.get(key)
        if current is not None and current[0] <= deadline:
            return
        entry = (deadline, next(self._seq), key)
        self._delayed[key] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._delayed) + _COMPACT_SLACK:
            self._heap = list(self._delayed.values())
            heapq.heapify(self._heap)
        self._arm(loop)

    def when(self, key: K) -> float:
        """Record a failure of ``key`` and return its rate-limited delay in seconds.

        The delay is the larger of the per-key exponential backoff and the token-bucket wait.
        """
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        backoff = min(self._base_delay * 2.0 ** min(failures, _MAX_EXPONENT), self._max_delay)
        return max(backoff, self._bucket.reserve(self._clock()))

    def add_rate_limited(self, key: K) -> None:
        """Re-add ``key`` after the delay given by :meth:`when`; ignored after shutdown."""
        if self._shutting_down:
            return
        self._metrics.on_retry()
        self.add_after(key, self.when(key))

    def forget(self, key: K) -> None:
        """Reset the failure count of ``key``."""
        self._failures.pop(key, None)

    def num_requeues(self, key: K) -> int:
        """Return how many times ``key`` was rate-limited since it was last forgotten."""
        return self._failures.get(key, 0)

    async def get(self) -> K:
        """Wait for a ready key and mark it as being processed.

        Raises :class:`QueueShutDown` once the queue is shut down.
        """
        while True:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            if self._queue:
                break
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                getter.cancel()
                if getter.cancelled():
                    with contextlib.suppress(ValueError):  # shutdown() may have taken it
                        self._getters.remove(getter)
                elif self._queue:
                    # Woken for a key but cancelled before taking it: pass the wake-up on.
                    self._wake_one()
                raise
        key = self._queue.popleft()
        now = self._clock()
        self._metrics.on_depth(len(self._queue))
        self._metrics.on_queue_latency(now - self._ready.pop(key))
        self._processing[key] = now
        self._idle.clear()
        return key

    def done(self, key: K) -> None:
        """Mark ``key`` as processed; re-queue it if it was added meanwhile.

        A no-op if ``key`` is not being processed.
        """
        started = self._processing.pop(key, None)
        if started is None:
            return
        self._metrics.on_work_duration(self._clock() - started)
        if not self._processing:
            self._idle.set()
        if key in self._requeue:
            self._requeue.remove(key)
            self._push(key)

    def shutdown(self) -> None:
        """Stop the queue: drop waiting and delayed keys and fail current and future gets.

        Keys being processed may still be marked :meth:`done`; see :meth:`drain`.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        self._queue.clear()
        self._ready.clear()
        self._requeue.clear()
        self._delayed.clear()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
        self._metrics.on_depth(0)

    async def drain(self, timeout: float) -> bool:
        """Wait until no key is being processed; return False if ``timeout`` elapses first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _push(self, key: K) -> None:
        """Append ``key`` to the ready queue and wake one getter."""
        self._queue.append(key)
        self._ready[key] = self._clock()
        self._metrics.on_depth(len(self._queue))
        self._wake_one()

    def _wake_one(self) -> None:
        """Wake the first getter that is still waiting."""
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Point the timer at the earliest delayed deadline, if it is not already earlier."""
        while self._heap and self._delayed.get(self._heap[0][2]) is not self._heap[0]:
            heapq.heappop(self._heap)  # superseded by an earlier deadline for the same key
        if not self._heap:
            return
        first = self._heap[0][0]
        if self._timer is not None:
            if self._timer.when() <= first:
                return
            self._timer.cancel()
        self._timer = loop.call_at(first, self._fire)

    def _fire(self) -> None:
        """Move every delayed key whose deadline has come to the ready queue."""
        assert self._timer is not None
        due = self._timer.when()
        self._timer = None
        while self._heap and self._heap[0][0] <= due:
            entry = heapq.heappop(self._heap)
            key = entry[2]
            if self._delayed.get(key) is entry:
                del self._delayed[key]
                self.add(key)
        self._arm(asyncio.get_running_loop())
