"""customtask-sdk: write Tekton custom task controllers in Python.

Subclass :class:`Reconciler`, declare the ``api_version``/``kind`` you serve and the
:class:`Params` model of your input, and return an :class:`Outcome` from ``reconcile``.
The SDK owns the CustomRun contract (start, timeout, cancellation, retries, results,
status writes) and the machinery (cache, queue, leader election, probes, metrics).
Any other kind (PipelineRuns with your ``managedBy``...) gets the same machinery through
:class:`ObjectReconciler`: say which objects are yours, return the status you want.

Layers, each importing only those below it: :mod:`~customtask_sdk.client`,
:mod:`~customtask_sdk.informer`, :mod:`~customtask_sdk.queue`,
:mod:`~customtask_sdk.reconciler`, :mod:`~customtask_sdk.runtime`, and
:mod:`~customtask_sdk.testing` (a real control plane for tests).
"""

from customtask_sdk.client import (
    PIPELINE_RUNS,
    TASK_RUNS,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    KubeClient,
    NotFoundError,
    Resource,
    ServerError,
    TooManyRequestsError,
)
from customtask_sdk.reconciler import (
    CANCELLED,
    DEFAULT_TIMEOUT,
    TIMED_OUT,
    Clock,
    Failed,
    GoDuration,
    NoParams,
    Object,
    ObjectReconciler,
    Outcome,
    Owned,
    Params,
    Reconciler,
    Result,
    RetryLater,
    Run,
    RunFailed,
    Running,
    Succeeded,
)
from customtask_sdk.runtime import LeaderElection, Manager

__version__ = "0.1.0"

__all__ = [
    "CANCELLED",
    "DEFAULT_TIMEOUT",
    "PIPELINE_RUNS",
    "TASK_RUNS",
    "TIMED_OUT",
    "ApiError",
    "Clock",
    "ConflictError",
    "Failed",
    "ForbiddenError",
    "GoDuration",
    "GoneError",
    "InvalidError",
    "KubeClient",
    "LeaderElection",
    "Manager",
    "NoParams",
    "NotFoundError",
    "Object",
    "ObjectReconciler",
    "Outcome",
    "Owned",
    "Params",
    "Reconciler",
    "Resource",
    "Result",
    "RetryLater",
    "Run",
    "RunFailed",
    "Running",
    "ServerError",
    "Succeeded",
    "TooManyRequestsError",
    "__version__",
]
