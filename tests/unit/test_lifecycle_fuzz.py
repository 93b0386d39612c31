"""Arbitrary params and customSpec: the run always ends in a clear state, nothing raises."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customtask_sdk.reconciler.lifecycle import step, succeeded_condition
from customtask_sdk.testing.clock import FakeClock
from examples.wait.controller import Wait

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
param_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["1s", "0", "-3s", "1h30m", "2026-01-01T00:00:00Z", "90", "1.5h", "1d"]),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    json_values,
)
params = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.one_of(st.sampled_from(["duration", "until", "other"]), st.text(max_size=8)),
            "value": param_values,
        }
    )
    | json_values,
    max_size=4,
)
specs = st.one_of(
    st.none(),
    json_values,
    st.dictionaries(st.sampled_from(["duration", "until", "x"]), param_values),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    params=params,
    embedded=specs,
    timeout=st.one_of(
        st.none(), st.sampled_from(["0", "1s", "bogus", "-1s", "10m"]), st.text(max_size=6)
    ),
    retries=st.integers(min_value=0, max_value=3),
)
async def test_any_input_ends_in_a_clear_state(
    params: list[Any], embedded: Any, timeout: Any, retries: int
) -> None:
    clock = FakeClock()
    spec: dict[str, Any] = {"params": params, "retries": retries}
    if embedded is None:
        spec["customRef"] = {"apiVersion": Wait.api_version, "kind": "Wait"}
    else:
        spec["customSpec"] = {"apiVersion": Wait.api_version, "kind": "Wait", "spec": embedded}
    if timeout is not None:
        spec["timeout"] = timeout
    obj = {"metadata": {"name": "r", "namespace": "n", "uid": "u", "generation": 1}, "spec": spec}
    result = await step(Wait(clock), obj, clock.now())
    assert result.error is None
    cond = succeeded_condition({"status": result.status})
    assert cond is not None
    if cond["status"] == "False":
        assert cond["reason"]
        assert len(cond["message"]) > 10  # says what is wrong
    else:
        assert cond["status"] in ("Unknown", "True")
