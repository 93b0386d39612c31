"""The Reconciler contract: subclass :class:`Reconciler`, return an :class:`Outcome`; or,
for a kind that is not a CustomRun, :class:`ObjectReconciler` returning a :class:`Result`.

The machinery behind it (:func:`customtask_sdk.reconciler.lifecycle.step` and its
helpers) is internal: the runtime and :mod:`customtask_sdk.testing.harness` use it.
"""

from customtask_sdk.reconciler.base import Clock, NoParams, Reconciler, SystemClock
from customtask_sdk.reconciler.durations import GoDuration, format_go_duration, parse_go_duration
from customtask_sdk.reconciler.lifecycle import CANCELLED, TIMED_OUT
from customtask_sdk.reconciler.objects import Object, ObjectReconciler, Result
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
from customtask_sdk.reconciler.run import DEFAULT_TIMEOUT, Params, Run

__all__ = [
    "CANCELLED",
    "DEFAULT_TIMEOUT",
    "TIMED_OUT",
    "Clock",
    "Failed",
    "GoDuration",
    "NoParams",
    "Object",
    "ObjectReconciler",
    "Outcome",
    "Owned",
    "Params",
    "Reconciler",
    "Result",
    "ResultValue",
    "RetryLater",
    "Run",
    "RunFailed",
    "Running",
    "Succeeded",
    "SystemClock",
    "format_go_duration",
    "parse_go_duration",
]
