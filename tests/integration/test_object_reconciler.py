"""An ObjectReconciler of PipelineRuns filtered by ``spec.managedBy``, on the real apiserver
with Tekton's own controller running beside it."""

from __future__ import annotations

import contextlib
import datetime
from typing import Any, ClassVar

from customtask_sdk import PIPELINE_RUNS, Object, ObjectReconciler, Owned, Result
from customtask_sdk.client import JSON, ConflictError, KubeClient, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import running

CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
MINE = "integration.customtask.dev/delegated"
LABEL = {"app.kubernetes.io/managed-by": "integration-delegated"}


class Delegated(ObjectReconciler):
    """Makes a ConfigMap per PipelineRun it manages, and succeeds once it is cached."""

    resource = PIPELINE_RUNS
    owns: ClassVar = (Owned(CONFIG_MAPS, labels=LABEL),)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def selects(self, obj: JSON) -> bool:
        return (obj.get("spec") or {}).get("managedBy") == MINE

    async def reconcile(self, obj: Object) -> Result:
        self.seen.append(obj.name)
        started = obj.status.get("startTime") or obj.obj["metadata"]["creationTimestamp"]
        if not obj.owned(CONFIG_MAPS):
            meta = {"name": obj.name, "labels": LABEL, "ownerReferences": [obj.owner_reference()]}
            with contextlib.suppress(ConflictError):  # made earlier; its event is on its way
                await self.client.create(CONFIG_MAPS.path(obj.namespace), {"metadata": meta})
            cond = {"type": "Succeeded", "status": "Unknown", "reason": "Running"}
            return Result(status={"startTime": started, "conditions": [cond]})
        cond = {"type": "Succeeded", "status": "True", "reason": "Succeeded"}
        return Result(status={"startTime": started, "conditions": [cond]})


def pipeline_run(name: str, managed_by: str | None) -> JSON:
    spec: JSON = {
        "pipelineSpec": {
            "tasks": [{"name": "t", "taskSpec": {"steps": [{"name": "s", "image": "busybox"}]}}]
        }
    }
    if managed_by is not None:
        spec["managedBy"] = managed_by
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": spec,
    }


async def test_a_managed_pipelinerun_is_ours_alone_and_the_others_are_not_cached(
    kube: KubeClient, namespace: str
) -> None:
    reconciler = Delegated()
    writes: list[Any] = []
    async with running(kube, reconciler, namespace=namespace) as manager:
        (controller,) = manager.controllers
        other = await kube.create(PIPELINE_RUNS.path(namespace), pipeline_run("other", "x.dev/y"))
        created = await kube.create(PIPELINE_RUNS.path(namespace), pipeline_run("mine", MINE))
        done = await wait_for(
            kube,
            PIPELINE_RUNS,
            namespace,
            "mine",
            lambda o: (condition(o) or {}).get("status") == "True",
        )
        # Tekton's controller leaves both alone: it would have set a Started condition and
        # its own labels; a PipelineRun of Tekton's made after them proves it had its chance.
        await kube.create(PIPELINE_RUNS.path(namespace), pipeline_run("tektons", None))
        await wait_for(
            kube, PIPELINE_RUNS, namespace, "tektons", lambda o: condition(o) is not None
        )
        assert controller.runs.keys() == [f"{namespace}/mine"]
        writes.append(manager.metrics.exposition().decode())
    untouched = await kube.get(PIPELINE_RUNS.path(namespace, "other"))
    assert "status" not in untouched or not untouched["status"].get("conditions")
    assert untouched["metadata"]["resourceVersion"] == other["metadata"]["resourceVersion"]
    assert set(reconciler.seen) == {"mine"}
    assert "tekton.dev/pipeline" not in (done["metadata"].get("labels") or {})
    assert done["metadata"]["generation"] == created["metadata"]["generation"]
    start = datetime.datetime.fromisoformat(done["status"]["startTime"].replace("Z", "+00:00"))
    assert start.tzinfo is not None
    (text,) = writes
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("customtask_status_writes_total{") and "pipelineruns" in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 2.0  # Running, then Succeeded: nothing more
