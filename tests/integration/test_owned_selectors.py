"""Owned objects with selectors and a field projection, on the real apiserver."""

from __future__ import annotations

from typing import Any

from customtask_sdk import Owned, Reconciler, Run
from customtask_sdk.client import CUSTOM_RUNS, JSON, ConflictError, KubeClient, Resource
from customtask_sdk.informer import Informer
from customtask_sdk.reconciler import NoParams, Outcome, Running, Succeeded
from customtask_sdk.runtime import Manager
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import create_custom_run, running

API = "owned.customtask.dev/v1"
PODS = Resource("", "v1", "pods", "Pod")
MANAGED_BY = "app.kubernetes.io/managed-by"
POD = Owned(
    PODS,
    labels={MANAGED_BY: "pod-task"},
    field_selector="spec.restartPolicy=Never",
    fields=("status.phase",),
)


def pod_body(metadata: JSON, restart_policy: str = "Never") -> JSON:
    """A Pod; with no kubelet it stays Pending until a test writes its status."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
        },
    }


class PodTask(Reconciler[NoParams]):
    """Creates one Pod per run and succeeds when it does; says what its cache shows."""

    api_version = API
    kind = "PodTask"
    owns = (POD,)

    async def reconcile(self, run: Run[NoParams]) -> Outcome:
        pods = run.owned(PODS)
        if not pods:
            body = pod_body(POD.metadata(run, name=f"{run.name}-pod"))
            try:
                await self.client.create(PODS.path(run.namespace), body)
            except ConflictError as exc:
                if not exc.already_exists:
                    raise
                return Running(message="pod not cached")
            return Running(message="pod created")
        phase = pods[0]["status"]["phase"]
        if phase == "Succeeded":
            return Succeeded(message="pod succeeded")
        return Running(message=f"pod {phase}")


def pods_of(manager: Manager) -> Informer:
    return manager.controllers[0].owned[PODS]


async def wait_message(kube: KubeClient, namespace: str, name: str, message: str) -> JSON:
    return await wait_for(
        kube,
        CUSTOM_RUNS,
        namespace,
        name,
        lambda o: (condition(o) or {}).get("message") == message,
        timeout=30,
    )


async def test_only_selected_objects_are_cached_and_their_changes_wake_the_run(
    kube: KubeClient, namespace: str
) -> None:
    pods = PODS.path(namespace)
    await kube.create(pods, pod_body({"name": "unlabelled"}))
    await kube.create(pods, pod_body({"name": "always", "labels": POD.labels}, "Always"))
    async with running(kube, PodTask(), namespace=namespace, events=False) as manager:
        cache = pods_of(manager)
        assert len(cache) == 0  # listed, and neither unselected Pod came in
        run = await create_custom_run(kube, namespace, API, "PodTask")
        name = run["metadata"]["name"]
        await wait_message(kube, namespace, name, "pod Pending")
        # Pods the run owns but outside the selectors: never cached, never wake the run.
        owner: dict[str, Any] = {"ownerReferences": [run_reference(run)]}
        await kube.create(pods, pod_body({"name": "owned-unlabelled", **owner}))
        await kube.create(pods, pod_body({"name": "owned-always", **owner}, "Always"))
        # The barrier: a change to the run's own Pod, written after those creates, reaches
        # the cache and wakes the run (which asked for no requeue).
        await kube.patch(
            PODS.path(namespace, f"{name}-pod", "status"), {"status": {"phase": "Succeeded"}}
        )
        done = await wait_message(kube, namespace, name, "pod succeeded")
        assert cache.keys() == [f"{namespace}/{name}-pod"]
        cached = cache.get(f"{namespace}/{name}-pod")
    assert (condition(done) or {}).get("status") == "True"
    assert cached is not None
    assert set(cached) == {"apiVersion", "kind", "metadata", "status"}
    assert cached["status"] == {"phase": "Succeeded"}
    assert cached["metadata"]["labels"] == POD.labels
    assert cached["metadata"]["ownerReferences"] == [run_reference(run)]


async def test_an_object_that_stops_matching_leaves_the_cache_and_wakes_its_run(
    kube: KubeClient, namespace: str
) -> None:
    async with running(kube, PodTask(), namespace=namespace, events=False) as manager:
        run = await create_custom_run(kube, namespace, API, "PodTask")
        name = run["metadata"]["name"]
        await wait_message(kube, namespace, name, "pod Pending")
        assert len(pods_of(manager)) == 1
        unlabel = {"metadata": {"labels": {MANAGED_BY: None}}}
        await kube.patch(PODS.path(namespace, f"{name}-pod"), unlabel)
        await wait_message(kube, namespace, name, "pod not cached")
        assert len(pods_of(manager)) == 0


def run_reference(run: JSON) -> JSON:
    return {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "name": run["metadata"]["name"],
        "uid": run["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
