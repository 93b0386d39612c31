"""Pipeline-in-Pod's controller on the local control plane (no node: the test writes the
Pod's container states where a kubelet would, through the Pod's ``/status``).

The controller's side of the contract: the Pipeline and Tasks resolved by name and frozen,
one Pod owned by the run and labelled, per-task status as containers end, the outcome and
pipeline results, a Pipeline edited mid-run that changes nothing, cancellation deleting
the Pod, clear fast failures, and a PipelineRun whose Tekton controller runs a
PipelineInPod task and reads its results.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, KubeClient
from customtask_sdk.testing import condition, create_object, wait_deleted, wait_for
from customtask_sdk.testing.controllers import running
from customtask_sdk.testing.pytest_plugin import Cluster
from examples.pipeline_in_pod import __main__ as pipeline_in_pod_cli
from examples.pipeline_in_pod.compiler import Images
from examples.pipeline_in_pod.controller import (
    MANAGED,
    PIPELINES,
    PODS,
    TASKS,
    PipelineInPod,
    custom_run,
)
from examples.wait.controller import Wait

IMAGES = Images("ep:1", "nop:1", "shell:1")


@pytest.fixture
def reconciler() -> PipelineInPod:
    return PipelineInPod(images=IMAGES)


def done(obj: JSON) -> bool:
    found = condition(obj)
    return found is not None and found.get("status") in ("True", "False")


def outcome(obj: JSON) -> tuple[str, str]:
    found = condition(obj) or {}
    return found.get("status", ""), found.get("reason", "")


async def create_run(kube: KubeClient, namespace: str, spec: JSON) -> str:
    name = f"pip-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "tekton.dev/v1beta1",
        "kind": "CustomRun",
        "metadata": {"name": name},
        "spec": spec,
    }
    await kube.create(CUSTOM_RUNS.path(namespace), body)
    return name


def embedded(spec: JSON) -> JSON:
    """A CustomRun's spec embedding ``spec`` (pipelineSpec, timeouts...)."""
    run_spec: JSON = custom_run("unused", spec)["spec"]
    return run_spec


def ref(name: str) -> JSON:
    return {
        "customRef": {
            "apiVersion": PipelineInPod.api_version,
            "kind": "PipelineInPod",
            "name": name,
        }
    }


def container(name: str, state: JSON, ready: bool = False) -> JSON:
    """A containerStatuses entry as the kubelet writes it."""
    return {
        "name": name,
        "ready": ready,
        "restartCount": 0,
        "image": "busybox",
        "imageID": "",
        "state": state,
    }


async def publish(kube: KubeClient, namespace: str, pipeline: str) -> None:
    """The Task ``maker`` and PIPELINE as Pipeline ``pipeline``."""
    await create_object(kube, TASKS, namespace, MAKER, name="maker")
    await create_object(kube, PIPELINES, namespace, PIPELINE, name=pipeline)


def terminated(
    name: str, code: int = 0, results: dict[str, str] | None = None, reason: str = ""
) -> JSON:
    entries = [{"key": "StartedAt", "value": "2026-01-01T00:00:00.000Z", "type": 3}]
    if reason:
        entries.append({"key": "Reason", "value": reason, "type": 3})
    entries += [{"key": k, "value": v, "type": 1} for k, v in (results or {}).items()]
    ended = {
        "exitCode": code,
        "message": json.dumps(entries),
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z",
    }
    return container(name, {"terminated": ended})


def started(name: str) -> JSON:
    return container(name, {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, ready=True)


def waiting(name: str, reason: str) -> JSON:
    return container(name, {"waiting": {"reason": reason, "message": "back-off pulling image"}})


async def kubelet(
    kube: KubeClient, namespace: str, pod: str, statuses: list[JSON], init: Sequence[JSON] = ()
) -> None:
    """Write container states as the kubelet would."""
    status = {"phase": "Running", "containerStatuses": statuses}
    if init:
        status = {"phase": "Pending", "initContainerStatuses": list(init)}
    await kube.patch(PODS.path(namespace, pod, "status"), {"status": status})


def tasks_state(run: JSON) -> dict[str, str]:
    fields = run.get("status", {}).get("extraFields") or {}
    return {t["name"]: t["state"] for t in fields.get("tasks") or []}


def made_pod(run: JSON) -> bool:
    return "pod" in (run.get("status", {}).get("extraFields") or {})


def made(run: JSON) -> bool:
    return tasks_state(run).get("make") == "succeeded"


PIPELINE = {
    "params": [{"name": "word", "default": "hi"}],
    "tasks": [
        {
            "name": "make",
            "taskRef": {"name": "maker"},
            "params": [{"name": "w", "value": "$(params.word)"}],
        },
        {
            "name": "use",
            "params": [{"name": "v", "value": "$(tasks.make.results.out)"}],
            "taskSpec": {
                "params": [{"name": "v"}],
                "steps": [{"image": "busybox", "command": ["echo", "$(params.v)"]}],
            },
        },
    ],
    "results": [{"name": "made", "value": "$(tasks.make.results.out)"}],
}
MAKER = {
    "params": [{"name": "w"}],
    "results": [{"name": "out"}],
    "steps": [
        {"name": "say", "image": "busybox", "script": "printf $(params.w) > $(results.out.path)"}
    ],
}


async def test_a_named_pipeline_runs_in_one_owned_pod_frozen_at_the_start(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    await publish(kube, namespace, "build")
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(
            kube, namespace, {**ref("build"), "params": [{"name": "word", "value": "yo"}]}
        )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, made_pod)
        pod_name = run["status"]["extraFields"]["pod"]
        pod = await wait_for(kube, PODS, namespace, pod_name, lambda o: True)
        assert pod["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
        labels = pod["metadata"]["labels"]
        assert labels.items() >= {**MANAGED, "tekton.dev/customRun": name}.items()
        containers = [c["name"] for c in pod["spec"]["containers"]]
        assert containers == ["step-make-say", "step-use-unnamed-0", "pip-scheduler"]
        # The Pipeline and Task change mid-run: the frozen spec holds.
        await kube.patch(
            TASKS.path(namespace, "maker"),
            {"spec": {"steps": [{"name": "other", "image": "x", "command": ["x"]}]}},
        )
        await kubelet(
            kube,
            namespace,
            pod_name,
            [terminated("step-make-say", results={"out": "yo"}), started("step-use-unnamed-0")],
        )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, made)
        assert tasks_state(run) == {"make": "succeeded", "use": "running"}
        frozen = run["status"]["extraFields"]["spec"]
        await kubelet(
            kube,
            namespace,
            pod_name,
            [terminated("step-make-say", results={"out": "yo"}), terminated("step-use-unnamed-0")],
        )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("True", "Succeeded")
    assert run["status"]["results"] == [{"name": "made", "value": "yo"}]
    assert tasks_state(run) == {"make": "succeeded", "use": "succeeded"}
    assert frozen["tasks"]["make"]["steps"][0]["name"] == "say"
    assert "spec" not in run["status"]["extraFields"]  # a finished run needs it no more


async def test_cancelling_deletes_the_pod_and_a_pull_failure_fails_fast(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    spec = {
        "pipelineSpec": {
            "tasks": [{"name": "t", "taskSpec": {"steps": [{"image": "nope", "command": ["x"]}]}}]
        }
    }
    async with running(kube, reconciler, namespace=namespace):
        cancelled = await create_run(kube, namespace, embedded(spec))
        pulled = await create_run(kube, namespace, embedded(spec))
        broken = await create_run(kube, namespace, embedded(spec))
        for name in (cancelled, pulled, broken):
            await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        await kube.patch(
            CUSTOM_RUNS.path(namespace, cancelled), {"spec": {"status": "RunCancelled"}}
        )
        await kubelet(
            kube, namespace, f"{pulled}-pod", [waiting("step-t-unnamed-0", "ImagePullBackOff")]
        )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, cancelled, done)
        assert outcome(run) == ("False", "CustomRunCancelled")
        await wait_deleted(kube, PODS, namespace, f"{cancelled}-pod")
        await kubelet(kube, namespace, f"{broken}-pod", [], [waiting("prepare", "ErrImagePull")])
        run = await wait_for(kube, CUSTOM_RUNS, namespace, pulled, done)
        init = await wait_for(kube, CUSTOM_RUNS, namespace, broken, done)
    assert outcome(run) == ("False", "ImagePullBackOff")
    assert "task 't'" in condition(run)["message"]  # type: ignore[index]
    assert outcome(init) == ("False", "ErrImagePull")
    assert "init container 'prepare'" in condition(init)["message"]  # type: ignore[index]


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_cancelled_or_timed_out_run_ends_each_unfinished_task_so(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod, how: str
) -> None:
    kube = cluster.client
    step = {"image": "b", "command": ["x"]}
    tasks = [
        {"name": "a", "taskSpec": {"steps": [step]}},
        {"name": "b", "runAfter": ["a"], "taskSpec": {"steps": [step]}},
        {"name": "c", "runAfter": ["b"], "taskSpec": {"steps": [step]}},
    ]
    spec = embedded({"pipelineSpec": {"tasks": tasks}})
    if how == "timeout":
        spec["timeout"] = "5s"
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, spec)
        await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        states = [terminated("step-a-unnamed-0"), started("step-b-unnamed-0")]
        await kubelet(kube, namespace, f"{name}-pod", [*states, started("step-c-unnamed-0")])

        def b_running(run: JSON) -> bool:
            return tasks_state(run).get("b") == "running"

        await wait_for(kube, CUSTOM_RUNS, namespace, name, b_running)
        if how == "cancel":
            await kube.patch(
                CUSTOM_RUNS.path(namespace, name), {"spec": {"status": "RunCancelled"}}
            )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
        await wait_deleted(kube, PODS, namespace, f"{name}-pod")
    ended, reason = {
        "cancel": ("cancelled", "CustomRunCancelled"),
        "timeout": ("timedOut", "CustomRunTimedOut"),
    }[how]
    assert outcome(run) == ("False", reason)
    assert tasks_state(run) == {"a": "succeeded", "b": ended, "c": ended}
    assert "spec" not in run["status"]["extraFields"]  # a finished run needs it no more


async def test_what_one_pod_cannot_run_fails_at_the_start_naming_the_field(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    spec = {
        "pipelineSpec": {
            "tasks": [
                {
                    "name": "t",
                    "retries": 2,
                    "taskSpec": {"steps": [{"image": "b", "command": ["x"]}]},
                }
            ]
        }
    }
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))
        missing = await create_run(kube, namespace, ref("no-such-pipeline"))
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
        gone = await wait_for(kube, CUSTOM_RUNS, namespace, missing, done)
    assert outcome(run) == ("False", "Unsupported")
    assert condition(run)["message"].startswith("tasks[t].retries:")  # type: ignore[index]
    assert outcome(gone) == ("False", "PipelineNotFound")


async def test_a_pipelinerun_runs_a_pipeline_in_pod_task_and_reads_its_results(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    await publish(kube, namespace, "inner")
    outer = {
        "pipelineSpec": {
            "tasks": [
                {
                    "name": "grouped",
                    "taskRef": {
                        "apiVersion": PipelineInPod.api_version,
                        "kind": "PipelineInPod",
                        "name": "inner",
                    },
                    "params": [{"name": "word", "value": "hey"}],
                }
            ],
            "results": [{"name": "made", "value": "$(tasks.grouped.results.made)"}],
        }
    }
    pr = f"pr-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": pr},
        "spec": outer,
    }
    async with running(kube, reconciler, namespace=namespace):
        await kube.create(PIPELINE_RUNS.path(namespace), body)

        def child(obj: JSON) -> bool:
            return bool(obj.get("status", {}).get("childReferences"))

        listed = await wait_for(kube, PIPELINE_RUNS, namespace, pr, child)
        run_name = listed["status"]["childReferences"][0]["name"]
        pod = await wait_for(kube, PODS, namespace, f"{run_name}-pod", lambda o: True)
        labels = pod["metadata"]["labels"]
        assert (labels["tekton.dev/pipelineRun"], labels["tekton.dev/pipelineTask"]) == (
            pr,
            "grouped",
        )
        await kubelet(
            kube,
            namespace,
            pod["metadata"]["name"],
            [terminated("step-make-say", results={"out": "hey"}), terminated("step-use-unnamed-0")],
        )
        result = await wait_for(kube, PIPELINE_RUNS, namespace, pr, done, timeout=60)
    assert outcome(result) == ("True", "Succeeded")
    assert result["status"]["results"] == [{"name": "made", "value": "hey"}]


async def test_timeouts_tasks_cancels_the_dags_steps_and_times_the_run_out(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    spec = {
        "pipelineSpec": {
            "tasks": [{"name": "t", "taskSpec": {"steps": [{"image": "b", "command": ["x"]}]}}]
        },
        "timeouts": {"tasks": "1s"},
    }
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))

        def cancelled(pod: JSON) -> bool:
            annotations = pod["metadata"].get("annotations") or {}
            return annotations.get("tekton.dev/cancel") == "CANCEL"

        await wait_for(kube, PODS, namespace, f"{name}-pod", cancelled)
        # The entrypoint, seeing the cancel file, ends the step as Cancelled.
        step = terminated("step-t-unnamed-0", code=1, reason="Cancelled")
        await kubelet(kube, namespace, f"{name}-pod", [step])
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("False", "PipelineRunTimeout")
    assert tasks_state(run) == {"t": "timedOut"}


async def test_a_pod_deleted_mid_run_fails_the_run_instead_of_running_it_again(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    step = {"image": "b", "command": ["x"]}
    spec = {"pipelineSpec": {"tasks": [{"name": "t", "taskSpec": {"steps": [step]}}]}}
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))

        def seen(run: JSON) -> bool:
            return bool(tasks_state(run))

        await wait_for(kube, CUSTOM_RUNS, namespace, name, seen)
        await kube.delete(PODS.path(namespace, f"{name}-pod"), {"gracePeriodSeconds": "0"})
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("False", "PodDeleted")


async def test_the_runs_retries_rerun_the_whole_pod_from_the_frozen_spec(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    await publish(kube, namespace, "build")
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, {**ref("build"), "retries": 1})
        await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        await kube.delete(TASKS.path(namespace, "maker"))  # the retry needs no lookup
        failed = [
            terminated("step-make-say", code=1),
            terminated("step-use-unnamed-0", code=1, reason="Skipped"),
        ]
        await kubelet(kube, namespace, f"{name}-pod", failed)
        retry = await wait_for(kube, PODS, namespace, f"{name}-pod-retry1", lambda o: True)
        assert retry["metadata"]["labels"]["pipelineinpod.customtask.dev/attempt"] == "1"
        await kubelet(
            kube,
            namespace,
            f"{name}-pod-retry1",
            [terminated("step-make-say", results={"out": "hi"}), terminated("step-use-unnamed-0")],
        )
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("True", "Succeeded")
    assert len(run["status"]["retriesStatus"]) == 1
    assert run["status"]["results"] == [{"name": "made", "value": "hi"}]


async def test_the_demo_runs_the_sample_and_prints_each_tasks_state(
    cluster: Cluster,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if cluster.control_plane is None:
        pytest.skip("runs the controller in this process against the local control plane")
    monkeypatch.setenv("KUBECONFIG", str(cluster.control_plane.kubeconfig))
    kube = cluster.client
    demo = asyncio.create_task(pipeline_in_pod_cli.demo(namespace, timeout=60))

    def listed(pr: JSON) -> bool:
        return bool((pr.get("status") or {}).get("childReferences"))

    prs: list[JSON] = []
    while not prs:  # the demo names its PipelineRun build-and-test-<random>
        prs = (await kube.get(PIPELINE_RUNS.path(namespace)))["items"]
        await asyncio.sleep(0.1)
    pr = await wait_for(kube, PIPELINE_RUNS, namespace, prs[0]["metadata"]["name"], listed)
    pod = f"{pr['status']['childReferences'][0]['name']}-pod"
    await wait_for(kube, PODS, namespace, pod, lambda o: True)
    await kubelet(
        kube,
        namespace,
        pod,
        [
            terminated("step-compile-build", results={"artifact": "app-v1.2.3"}),
            terminated("step-unit-tests-unnamed-0"),
            terminated("step-lint-unnamed-0"),
            terminated("step-package-unnamed-0", results={"image": "registry.local/app-v1.2.3"}),
            terminated("pip-scheduler"),
            terminated("pip-finally-barrier"),
            terminated("step-report-unnamed-0"),
        ],
    )
    assert await demo
    printed = capsys.readouterr().out
    assert "compile                  pending (Pending)" in printed
    assert "package                  succeeded (Succeeded)" in printed
    done_pr = await wait_for(kube, PIPELINE_RUNS, namespace, pr["metadata"]["name"], done)
    assert done_pr["status"]["results"] == [{"name": "image", "value": "registry.local/app-v1.2.3"}]


async def test_a_custom_tasks_custom_run_is_made_informed_and_cancelled_as_tekton_would(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    wait_ref = {"apiVersion": Wait.api_version, "kind": "Wait"}
    pipeline = {
        "tasks": [
            {**PIPELINE["tasks"][0], "taskRef": None, "taskSpec": MAKER},
            {
                "name": "pause",
                "taskRef": wait_ref,
                "params": [{"name": "duration", "value": "$(tasks.make.results.out)"}],
            },
            {
                "name": "long",
                "runAfter": ["pause"],
                "taskRef": wait_ref,
                "params": [{"name": "duration", "value": "1h"}],
                "timeout": "2h",
            },
        ]
    }
    spec = {"pipelineSpec": pipeline, "timeouts": {"tasks": "6s"}, "word": "0s"}
    async with running(kube, reconciler, Wait(), namespace=namespace):
        name = await create_run(kube, namespace, embedded(spec))
        pod = f"{name}-pod"
        await wait_for(kube, PODS, namespace, pod, lambda o: True)
        made = terminated("step-make-say", results={"out": "0s"})
        # The stand-in's first step ran: the CustomRun is made, make's result its param.
        await kubelet(kube, namespace, pod, [made, terminated("step-pause-start")])
        child = await wait_for(kube, CUSTOM_RUNS, namespace, f"{name}-pause", done)
        assert child["spec"]["params"] == [{"name": "duration", "value": "0s"}]
        assert child["spec"]["customRef"] == wait_ref
        assert child["metadata"]["ownerReferences"][0]["name"] == name
        assert "timeout" not in child["spec"]  # timeouts.tasks is under Tekton's default

        # Its outcome reaches the Pod, as an annotation the downward API exposes.
        def told(obj: JSON) -> bool:
            annotations = obj["metadata"].get("annotations") or {}
            return annotations.get("pipelineinpod.customtask.dev/pause") == "Succeeded"

        await wait_for(kube, PODS, namespace, pod, told)
        steps = [made, terminated("step-pause-start"), terminated("step-pause-wait")]
        await kubelet(kube, namespace, pod, [*steps, terminated("step-long-start")])
        long = await wait_for(kube, CUSTOM_RUNS, namespace, f"{name}-long", lambda o: True)
        assert long["spec"]["timeout"] == "2h"
        # timeouts.tasks passes: the DAG's steps and its CustomRuns are cancelled.
        cancelled = await wait_for(kube, CUSTOM_RUNS, namespace, f"{name}-long", done, 30)
        assert outcome(cancelled) == ("False", "CustomRunCancelled")
        assert cancelled["spec"]["statusMessage"].endswith("has timed out.")
        stopped = terminated("step-long-wait", code=1, reason="Cancelled")
        await kubelet(kube, namespace, pod, [*steps, terminated("step-long-start"), stopped])
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
    assert outcome(run) == ("False", "PipelineRunTimeout")
    assert tasks_state(run) == {"make": "succeeded", "pause": "succeeded", "long": "timedOut"}
    entry = next(t for t in run["status"]["extraFields"]["tasks"] if t["name"] == "long")
    assert entry["customRun"] == f"{name}-long"
    assert entry["reason"] == "CustomRunCancelled"


async def test_cancelling_the_run_cancels_its_custom_runs_and_ends_their_tasks(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    wait_ref = {"apiVersion": Wait.api_version, "kind": "Wait"}
    hold = {"name": "hold", "taskRef": wait_ref, "params": [{"name": "duration", "value": "1h"}]}
    async with running(kube, reconciler, Wait(), namespace=namespace):
        name = await create_run(kube, namespace, embedded({"pipelineSpec": {"tasks": [hold]}}))
        await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        await kubelet(kube, namespace, f"{name}-pod", [terminated("step-hold-start")])
        await wait_for(
            kube, CUSTOM_RUNS, namespace, f"{name}-hold", lambda o: condition(o) is not None
        )
        await kube.patch(CUSTOM_RUNS.path(namespace, name), {"spec": {"status": "RunCancelled"}})
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, done)
        child = await wait_for(kube, CUSTOM_RUNS, namespace, f"{name}-hold", done)
    assert outcome(run) == ("False", "CustomRunCancelled")
    assert outcome(child) == ("False", "CustomRunCancelled")
    assert child["spec"]["statusMessage"].endswith("has been cancelled.")
    (entry,) = run["status"]["extraFields"]["tasks"]
    assert (entry["state"], entry["customRun"]) == ("cancelled", f"{name}-hold")


async def test_a_child_pipeline_by_name_is_frozen_into_the_pod_and_a_loop_is_rejected(
    cluster: Cluster, namespace: str, reconciler: PipelineInPod
) -> None:
    kube = cluster.client
    await publish(kube, namespace, "inner")
    outer = {"tasks": [{"name": "c", "pipelineRef": {"name": "inner"}}]}
    await create_object(kube, PIPELINES, namespace, outer, name="outer")
    loop = {"tasks": [{"name": "again", "pipelineRef": {"name": "loop"}}]}
    await create_object(kube, PIPELINES, namespace, loop, name="loop")
    async with running(kube, reconciler, namespace=namespace):
        name = await create_run(kube, namespace, ref("outer"))
        looping = await create_run(kube, namespace, ref("loop"))
        pod = await wait_for(kube, PODS, namespace, f"{name}-pod", lambda o: True)
        run = await wait_for(kube, CUSTOM_RUNS, namespace, name, lambda o: bool(tasks_state(o)))
        failed = await wait_for(kube, CUSTOM_RUNS, namespace, looping, done)
    containers = [c["name"] for c in pod["spec"]["containers"]]
    # The child's end (its barrier, its outcome) beside the child's tasks.
    assert containers == ["step-c-end", "step-c-make-say", "step-c-use-unnamed-0", "pip-scheduler"]
    frozen = run["status"]["extraFields"]["spec"]
    assert frozen["pipeline"]["tasks"][0]["pipelineSpec"]["tasks"][0]["name"] == "make"
    assert frozen["tasks"]["c-make"]["steps"][0]["name"] == "say"
    assert set(tasks_state(run)) == {"c-make", "c-use"}
    assert outcome(failed) == ("False", "InvalidPipeline")
    assert "Pipeline 'loop' runs itself (loop -> loop)" in condition(failed)["message"]  # type: ignore[index]
