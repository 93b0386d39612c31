"""The controllers ``bench/owned.py`` measures: one Pod per run, owned four ways.

Each creates the same Pod (labelled by ``SELECTED.metadata``) and reports its phase; they
differ only in what ``owns`` makes them cache. Kept apart from the driver so that a
controller process imports nothing the benchmark itself needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from customtask_sdk import Owned, Reconciler, Run, Running
from customtask_sdk.client import ConflictError, Resource
from customtask_sdk.reconciler import NoParams, Outcome

API = "owned.bench.customtask.dev/v1"
PODS = Resource("", "v1", "pods", "Pod")
LABELS = {"app.kubernetes.io/managed-by": "owned-bench"}
FIELDS = ("status.phase", "status.containerStatuses")
SELECTED = Owned(PODS, labels=LABELS, fields=FIELDS)


class AllPods(Reconciler[NoParams]):
    """``owns = (PODS,)``: every Pod in the cluster, whole."""

    api_version = API
    kind = "PodTask"
    owns: ClassVar[Sequence[Resource | Owned]] = (PODS,)

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        pods = run.owned(PODS)
        if pods:
            return Running(message=f"pod {pods[0]['status']['phase']}")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": SELECTED.metadata(run, name=f"{run.name}-pod"),
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
            },
        }
        try:
            await self.client.create(PODS.path(run.namespace), pod)
        except ConflictError as exc:  # the cache has not seen our create yet
            if not exc.already_exists:
                raise
        return Running(message="pod created")


class ProjectedPods(AllPods):
    """Every Pod, but only ``FIELDS`` of each."""

    owns = (Owned(PODS, fields=FIELDS),)


class SelectedPods(AllPods):
    """Only the Pods labelled as this controller's, whole."""

    owns = (Owned(PODS, labels=LABELS),)


class SelectedProjectedPods(AllPods):
    """Only this controller's Pods, and only ``FIELDS`` of each."""

    owns = (SELECTED,)
