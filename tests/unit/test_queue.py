"""Unit tests for customtask_sdk.queue."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customtask_sdk.queue import QueueShutDown, WorkQueue


class FakeClock:
    """A manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingMetrics:
    """Records every metrics hook call."""

    def __init__(self) -> None:
        self.adds = 0
        self.retries = 0
        self.depths: list[int] = []
        self.latencies: list[float] = []
        self.durations: list[float] = []

    def on_add(self) -> None:
        self.adds += 1

    def on_depth(self, depth: int) -> None:
        self.depths.append(depth)

    def on_queue_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def on_work_duration(self, seconds: float) -> None:
        self.durations.append(seconds)

    def on_retry(self) -> None:
        self.retries += 1


async def get_now(q: WorkQueue[str], within: float = 1.0) -> str:
    return await asyncio.wait_for(q.get(), within)


@pytest.mark.asyncio
async def test_add_deduplicates_waiting_keys() -> None:
    q: WorkQueue[str] = WorkQueue("dedupe")
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert [await get_now(q) for _ in range(3)] == ["a", "b", "c"]
    assert len(q) == 0
    assert q.processing_count == 3


@pytest.mark.asyncio
async def test_add_while_processing_requeues_on_done() -> None:
    q: WorkQueue[str] = WorkQueue("dirty")
    q.add("a")
    assert await get_now(q) == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a processing key must not be handed out again"
    q.done("a")
    assert len(q) == 1
    assert await get_now(q) == "a"
    q.done("a")
    assert len(q) == 0
    assert q.processing_count == 0


@pytest.mark.asyncio
async def test_done_of_unknown_key_is_ignored() -> None:
    q: WorkQueue[str] = WorkQueue("unknown")
    q.done("never-added")
    assert q.processing_count == 0
    assert len(q) == 0


@pytest.mark.asyncio
async def test_concurrent_consumers_never_share_a_key() -> None:
    q: WorkQueue[str] = WorkQueue("hammer")
    keys = ["a", "b", "c"]
    active: set[str] = set()
    overlaps: list[str] = []
    owed: set[str] = set()  # keys added since they were last handed out
    handouts = 0
    producing = True
    settled = asyncio.Event()

    def check_settled() -> None:
        if not producing and not owed and q.processing_count == 0:
            settled.set()

    async def consumer() -> None:
        nonlocal handouts
        while True:
            try:
                key = await q.get()
            except QueueShutDown:
                return
            handouts += 1
            owed.discard(key)
            if key in active:
                overlaps.append(key)
            active.add(key)
            for _ in range(3):
                await asyncio.sleep(0)
            active.remove(key)
            q.done(key)
            check_settled()

    consumers = [asyncio.create_task(consumer()) for _ in range(8)]
    rng = random.Random(7)
    for _ in range(3000):
        key = rng.choice(keys)
        q.add(key)
        owed.add(key)
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    producing = False
    check_settled()
    await asyncio.wait_for(settled.wait(), 2.0)
    q.shutdown()
    await asyncio.gather(*consumers)
    assert overlaps == []
    assert 3 <= handouts < 3000


@pytest.mark.asyncio
async def test_add_after_orders_by_deadline() -> None:
    q: WorkQueue[str] = WorkQueue("ordering")
    q.add_after("a", 0.03)
    q.add_after("b", 0.01)
    q.add_after("c", 0.02)
    assert q.delayed_count == 3
    assert len(q) == 0
    assert [await get_now(q) for _ in range(3)] == ["b", "c", "a"]
    assert q.delayed_count == 0


@pytest.mark.asyncio
async def test_add_after_earlier_deadline_wins() -> None:
    q: WorkQueue[str] = WorkQueue("earliest")
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_after("a", 0.5)
    q.add_after("a", 0.01)
    assert q.delayed_count == 1
    assert await get_now(q, 0.3) == "a"
    assert loop.time() - start < 0.3
    assert q._timer is None, "no wake-up is left for the superseded deadline"
    q.done("a")

    q.add_after("b", 0.01)
    q.add_after("b", 0.5)
    assert q.delayed_count == 1
    assert await get_now(q, 0.3) == "b"
    q.done("b")
    assert q.delayed_count == 0


@pytest.mark.asyncio
async def test_add_after_non_positive_delay_adds_now() -> None:
    q: WorkQueue[str] = WorkQueue("now")
    q.add_after("a", 0)
    q.add_after("b", -1.0)
    assert len(q) == 2
    assert q.delayed_count == 0


@pytest.mark.asyncio
async def test_add_after_of_ready_key_is_deduplicated_when_still_waiting() -> None:
    q: WorkQueue[str] = WorkQueue("ready-waiting")
    q.add("a")
    q.add_after("a", 0.005)
    assert (len(q), q.delayed_count) == (1, 1)
    await asyncio.sleep(0.02)
    assert (len(q), q.delayed_count) == (1, 0)
    assert await get_now(q) == "a"
    q.done("a")
    assert len(q) == 0


@pytest.mark.asyncio
async def test_add_after_of_ready_key_is_handed_out_again_after_the_delay() -> None:
    q: WorkQueue[str] = WorkQueue("ready-handed-out")
    q.add("a")
    q.add_after("a", 0.01)
    assert await get_now(q) == "a"
    q.done("a")
    assert len(q) == 0
    assert await get_now(q) == "a"
    assert q.delayed_count == 0


@pytest.mark.asyncio
async def test_repeated_earlier_add_after_keeps_heap_bounded() -> None:
    q: WorkQueue[str] = WorkQueue("compact")
    for i in range(5000):
        q.add_after("a", 100.0 - i * 0.01)
    assert q.delayed_count == 1
    assert len(q._heap) < 100
    q.shutdown()


def test_exponential_backoff_sequence_and_forget() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("backoff", clock=clock)
    assert [q.when("a") for _ in range(4)] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert q.num_requeues("a") == 4
    assert q.when("b") == pytest.approx(0.005), "backoff is per key"
    q.forget("a")
    assert q.num_requeues("a") == 0
    assert q.when("a") == pytest.approx(0.005)


def test_backoff_is_capped() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("cap", base_delay=1.0, max_delay=5.0, qps=1e9, clock=clock)
    assert [q.when("a") for _ in range(5)] == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0])
    for _ in range(2000):
        delay = q.when("a")
    assert delay == 5.0
    assert q.num_requeues("a") == 2005


def test_token_bucket_limits_a_burst() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("bucket", base_delay=0.0, qps=10.0, burst=3, clock=clock)
    delays = [q.when(f"k{i}") for i in range(5)]
    assert delays == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])
    clock.now += 0.25  # refills 2.5 tokens: -2 + 2.5 - 1 = -0.5
    assert q.when("k5") == pytest.approx(0.05)
    clock.now += 100.0  # refill is capped at the burst size
    assert [q.when(f"x{i}") for i in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])


def test_rate_limit_is_max_of_backoff_and_bucket() -> None:
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue("max", base_delay=0.05, qps=10.0, burst=1, clock=clock)
    assert q.when("a") == pytest.approx(0.05)  # bucket: 0, backoff: 0.05
    assert q.when("b") == pytest.approx(0.1)  # bucket: 0.1, backoff: 0.05


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_delay": -1.0}, "base_delay"),
        ({"base_delay": 2.0, "max_delay": 1.0}, "base_delay"),
        ({"qps": 0.0}, "qps"),
        ({"burst": 0}, "burst"),
    ],
)
def test_constructor_validates_rate_limits(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WorkQueue("bad", **kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_add_rate_limited_delays_and_counts_retries() -> None:
    metrics = RecordingMetrics()
    q: WorkQueue[str] = WorkQueue("retry", base_delay=0.01, metrics=metrics)
    q.add_rate_limited("a")
    assert (len(q), q.delayed_count) == (0, 1)
    assert q.num_requeues("a") == 1
    assert metrics.retries == 1
    assert await get_now(q) == "a"
    q.done("a")
    q.add_rate_limited("a")
    assert q.num_requeues("a") == 2
    assert metrics.retries == 2
    q.shutdown()


@pytest.mark.asyncio
async def test_shutdown_wakes_waiters_and_drops_keys() -> None:
    q: WorkQueue[str] = WorkQueue("shutdown")
    waiters = [asyncio.create_task(q.get()) for _ in range(3)]
    await asyncio.sleep(0)
    q.shutdown()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, QueueShutDown) for r in results)

    q2: WorkQueue[str] = WorkQueue("shutdown-drop")
    q2.add("held")
    assert await get_now(q2) == "held"
    q2.add("held")
    q2.add("waiting")
    q2.add_after("delayed", 0.005)
    q2.shutdown()
    assert q2.shutting_down
    assert (len(q2), q2.delayed_count, q2.processing_count) == (0, 0, 1)
    q2.add("late")
    q2.add_after("late", 0.001)
    q2.add_rate_limited("late")
    assert (len(q2), q2.delayed_count) == (0, 0)
    q2.done("held")
    assert (len(q2), q2.processing_count) == (0, 0), "dirty keys are dropped too"
    with pytest.raises(QueueShutDown):
        await q2.get()
    q2.shutdown()  # idempotent


@pytest.mark.asyncio
async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    q: WorkQueue[str] = WorkQueue("cancel")
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.add("a")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it can take the key
    assert await asyncio.wait_for(second, 1.0) == "a"
    with pytest.raises(asyncio.CancelledError):
        await first

    idle = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    idle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await idle
    assert len(q._getters) == 0


@pytest.mark.asyncio
async def test_drain_waits_for_in_flight_work() -> None:
    q: WorkQueue[str] = WorkQueue("drain")
    assert await q.drain(0.01)
    q.add("a")
    q.add("b")
    assert await get_now(q) == "a"
    assert await get_now(q) == "b"
    q.shutdown()
    assert not await q.drain(0.01)
    drained = asyncio.create_task(q.drain(1.0))
    q.done("a")
    # Barrier: a second drain, started after `drained`, times out with "b" in flight, so
    # `drained` has had its chance to see the same state and must still be waiting.
    assert not await q.drain(0.01)
    assert not drained.done()
    q.done("b")
    assert await drained


@pytest.mark.asyncio
async def test_metrics_hooks_receive_sensible_values() -> None:
    clock = FakeClock()
    metrics = RecordingMetrics()
    q: WorkQueue[str] = WorkQueue("metrics", metrics=metrics, clock=clock)
    q.add("a")
    q.add("a")  # deduplicated: not counted
    q.add("b")
    assert metrics.adds == 2
    assert metrics.depths == [1, 2]
    clock.now += 2.0
    assert await get_now(q) == "a"
    assert metrics.depths[-1] == 1
    assert metrics.latencies == [2.0]
    q.add("a")  # dirty while processing: counted, but not ready yet
    assert metrics.adds == 3
    assert metrics.depths[-1] == 1
    clock.now += 3.0
    q.done("a")
    assert metrics.durations == [3.0]
    assert metrics.depths[-1] == 2
    clock.now += 0.5
    assert await get_now(q) == "b"
    assert await get_now(q) == "a"
    assert metrics.latencies == [2.0, 5.5, 0.5]
    assert metrics.depths[-1] == 0


KEYS = ["a", "b", "c", "d"]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add_after", "get", "done", "sleep"]),
        st.sampled_from(KEYS),
        st.sampled_from([0.0, 0.001, 0.003]),
    ),
    max_size=40,
)


@pytest.mark.asyncio
@settings(max_examples=60, deadline=None)
@given(ops=OPS)
async def test_random_operations_keep_invariants(ops: list[tuple[str, str, float]]) -> None:
    q: WorkQueue[str] = WorkQueue("property")
    held: set[str] = set()
    owed: set[str] = set()  # keys added since they were last handed out
    adds = 0
    handouts = 0

    def hand_out(key: str) -> None:
        nonlocal handouts
        assert key not in held, f"{key} handed out twice at once"
        held.add(key)
        owed.discard(key)
        handouts += 1

    for op, key, delay in ops:
        if op == "add":
            q.add(key)
        elif op == "add_after":
            q.add_after(key, delay)
        elif op == "get" and len(q) > 0:
            hand_out(await q.get())
        elif op == "done" and key in held:
            held.remove(key)
            q.done(key)
        elif op == "sleep":
            await asyncio.sleep(delay)
        if op in ("add", "add_after"):
            owed.add(key)
            adds += 1
        assert q.processing_count == len(held)
        assert len(q) <= len(KEYS)
        assert q.delayed_count <= len(KEYS)

    for key in sorted(held):
        held.remove(key)
        q.done(key)
    while len(q) or q.delayed_count:
        key = await get_now(q)
        hand_out(key)
        held.remove(key)
        q.done(key)
    assert owed == set(), "every added key is eventually handed out"
    assert handouts <= adds
    assert q.processing_count == 0
