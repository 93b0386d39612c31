"""customtask-sdk: write Tekton custom task controllers in Python.

Subclass :class:`Reconciler`, declare the ``api_version``/``kind`` you serve and the
:class:`Params` model of your input, and return an :class:`Outcome` from ``reconcile``.
The SDK owns the CustomRun contract (start, timeout, cancellation, retries, results,
status writes) and the machinery (cache, queue, leader election, probes, metrics).

Layers, each importing only those below it: :mod:`~customtask_sdk.client`,
:mod:`~customtask_sdk.informer`, :mod:`~customtask_sdk.queue`,
:mod:`~customtask_sdk.reconciler`, :mod:`~customtask_sdk.runtime`, and
:mod:`~customtask_sdk.testing` (a real control plane for tests).
"""

from customtask_sdk.client import KubeClient
from customtask_sdk.reconciler import (
    DEFAULT_TIMEOUT,
    Clock,
    Failed,
    GoDuration,
    Outcome,
    Owned,
    Params,
    Reconciler,
    RetryLater,
    Run,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.runtime import LeaderElection, Manager

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "Clock",
    "Failed",
    "GoDuration",
    "KubeClient",
    "LeaderElection",
    "Manager",
    "Outcome",
    "Owned",
    "Params",
    "Reconciler",
    "RetryLater",
    "Run",
    "RunFailed",
    "Running",
    "Succeeded",
    "__version__",
]
