"""The Wait e2e suite runs on the local control plane (the Wait controller in this process)
or, with ``CUSTOMTASK_SDK_KUBECONFIG``, on a cluster where it is deployed (hack/e2e-kind.sh)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from customtask_sdk.reconciler import Reconciler
from customtask_sdk.runtime import Manager
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.pytest_plugin import Cluster
from examples.wait.controller import Wait

Serve = Callable[..., contextlib.AbstractAsyncContextManager[Manager | None]]


@pytest.fixture
def serve_waits(cluster: Cluster) -> Serve:
    """``async with serve_waits(namespace) as manager``: a Wait controller for the test.

    On an external cluster the deployed controller serves and ``manager`` is ``None``.
    """

    @contextlib.asynccontextmanager
    async def serve(
        namespace: str, reconciler: Reconciler[Any] | None = None, **options: Any
    ) -> AsyncIterator[Manager | None]:
        if cluster.external:
            if reconciler is not None:
                pytest.skip("serves a custom kind; the deployed controller serves only Wait")
            yield None
            return
        async with running(
            cluster.client, reconciler or Wait(), namespace=namespace, **options
        ) as m:
            yield m

    return serve
