"""The Reconciler contract: subclass :class:`Reconciler`, return an :class:`Outcome`."""

from customtask_sdk.reconciler.base import Clock, NoParams, Reconciler, SystemClock
from customtask_sdk.reconciler.durations import GoDuration, format_go_duration, parse_go_duration
from customtask_sdk.reconciler.lifecycle import (
    CANCELLED,
    TIMED_OUT,
    Event,
    Step,
    is_done,
    matches,
    step,
    succeeded_condition,
)
from customtask_sdk.reconciler.outcome import (
    Failed,
    Outcome,
    ResultValue,
    RetryLater,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.reconciler.owned import Owned
from customtask_sdk.reconciler.run import DEFAULT_TIMEOUT, InputError, Params, Run

__all__ = [
    "CANCELLED",
    "DEFAULT_TIMEOUT",
    "TIMED_OUT",
    "Clock",
    "Event",
    "Failed",
    "GoDuration",
    "InputError",
    "NoParams",
    "Outcome",
    "Owned",
    "Params",
    "Reconciler",
    "ResultValue",
    "RetryLater",
    "Run",
    "RunFailed",
    "Running",
    "Step",
    "Succeeded",
    "SystemClock",
    "format_go_duration",
    "is_done",
    "matches",
    "parse_go_duration",
    "step",
    "succeeded_condition",
]
