"""Tekton's own PipelineRun controller against the local control plane.

The test plays the custom task controller by hand, so these tests pin down the contract
the SDK implements: what Tekton puts on a CustomRun, what it reads back, and how it
cancels. Expectations follow Tekton's ``test/custom_task_test.go``.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, KubeClient, Resource
from customtask_sdk.testing import condition, wait_for

PIPELINES = Resource("tekton.dev", "v1", "pipelines", "Pipeline")
API_VERSION = "example.customtask.dev/v1alpha1"
KIND = "Example"
CANCELLED_MSG = "CustomRun cancelled as the PipelineRun it belongs to has been cancelled."
TIMED_OUT_MSG = "CustomRun cancelled as the PipelineRun it belongs to has timed out."


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def create_pipeline_run(
    kube: KubeClient, namespace: str, pipeline_spec: JSON, **spec: Any
) -> JSON:
    body = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {
            "name": _name("pr"),
            "labels": {"team": "platform"},
            "annotations": {"example.dev/note": "kept"},
        },
        "spec": {"pipelineSpec": pipeline_spec, **spec},
    }
    return await kube.create(PIPELINE_RUNS.path(namespace), body)


async def wait_custom_run(kube: KubeClient, namespace: str, name: str) -> JSON:
    return await wait_for(kube, CUSTOM_RUNS, namespace, name, lambda _: True)


async def write_status(kube: KubeClient, run: JSON, status: JSON) -> JSON:
    """Play the custom controller: merge-patch /status with a resourceVersion precondition."""
    meta = run["metadata"]
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    path = CUSTOM_RUNS.path(meta["namespace"], meta["name"], "status")
    return await kube.patch(path, body)


def started(generation: int) -> JSON:
    return {
        "startTime": _now(),
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Succeeded",
                "status": "Unknown",
                "reason": "Running",
                "lastTransitionTime": _now(),
            }
        ],
    }


def finished(state: str, reason: str, results: list[JSON] | None = None) -> JSON:
    return {
        "completionTime": _now(),
        "results": results or [],
        "conditions": [
            {
                "type": "Succeeded",
                "status": state,
                "reason": reason,
                "message": f"finished: {reason}",
                "lastTransitionTime": _now(),
            }
        ],
    }


def succeeded_with(reason: str) -> Any:
    return lambda obj: (
        (condition(obj) or {}).get("status") == "True"
        and (condition(obj) or {}).get("reason") == reason
    )


def failed_with(reason: str) -> Any:
    return lambda obj: (
        (condition(obj) or {}).get("status") == "False"
        and (condition(obj) or {}).get("reason") == reason
    )


async def test_customrun_carries_the_contract_metadata(kube: KubeClient, namespace: str) -> None:
    pipeline_spec = {
        "params": [{"name": "items", "type": "array", "default": ["a", "b"]}],
        "tasks": [
            {
                "name": "by-ref",
                "taskRef": {"apiVersion": API_VERSION, "kind": KIND},
                "timeout": "1m30s",
                "retries": 2,
                "params": [
                    {"name": "duration", "value": "5s"},
                    {"name": "list", "value": ["$(params.items[*])"]},
                    {"name": "map", "value": {"k": "v"}},
                ],
            },
            {
                "name": "by-spec",
                "taskSpec": {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"labels": {"test-label": "test"}},
                    "spec": {"field1": 123, "field2": "value"},
                },
            },
        ],
    }
    pr = await create_pipeline_run(kube, namespace, pipeline_spec)
    pr_name = pr["metadata"]["name"]

    by_ref = await wait_custom_run(kube, namespace, f"{pr_name}-by-ref")
    labels = by_ref["metadata"]["labels"]
    assert labels["team"] == "platform"
    assert labels["tekton.dev/pipelineRun"] == pr_name
    assert labels["tekton.dev/pipelineRunUID"] == pr["metadata"]["uid"]
    assert labels["tekton.dev/pipelineTask"] == "by-ref"
    assert labels["tekton.dev/memberOf"] == "tasks"
    assert by_ref["metadata"]["annotations"]["example.dev/note"] == "kept"
    (owner,) = by_ref["metadata"]["ownerReferences"]
    assert owner["kind"] == "PipelineRun"
    assert owner["name"] == pr_name
    assert owner["uid"] == pr["metadata"]["uid"]
    assert owner["controller"] is True
    spec = by_ref["spec"]
    assert spec["customRef"] == {"apiVersion": API_VERSION, "kind": KIND}
    assert spec["timeout"] == "1m30s"
    assert spec["retries"] == 2
    assert spec["params"] == [
        {"name": "duration", "value": "5s"},
        {"name": "list", "value": ["a", "b"]},
        {"name": "map", "value": {"k": "v"}},
    ]
    assert "status" not in by_ref or not by_ref["status"].get("conditions")

    by_spec = await wait_custom_run(kube, namespace, f"{pr_name}-by-spec")
    custom_spec = by_spec["spec"]["customSpec"]
    assert custom_spec["apiVersion"] == API_VERSION
    assert custom_spec["kind"] == KIND
    assert custom_spec["metadata"]["labels"] == {"test-label": "test"}
    assert custom_spec["spec"] == {"field1": 123, "field2": "value"}
    assert "customRef" not in by_spec["spec"]


async def test_results_reach_the_next_task_and_the_pipelinerun_succeeds(
    kube: KubeClient, namespace: str
) -> None:
    custom = {"apiVersion": API_VERSION, "kind": KIND}
    pipeline_spec = {
        "results": [{"name": "out", "value": "$(tasks.producer.results.runResult)"}],
        "tasks": [
            {"name": "producer", "taskRef": custom},
            {
                "name": "consumer",
                "taskRef": custom,
                "params": [
                    {"name": "from-producer", "value": "$(tasks.producer.results.runResult)"},
                    {"name": "list", "value": ["$(tasks.producer.results.listResult[*])"]},
                ],
            },
        ],
    }
    pr = await create_pipeline_run(kube, namespace, pipeline_spec)
    pr_name = pr["metadata"]["name"]

    producer = await wait_custom_run(kube, namespace, f"{pr_name}-producer")
    producer = await write_status(kube, producer, started(producer["metadata"]["generation"]))
    results = [
        {"name": "runResult", "value": "aResultValue"},
        {"name": "listResult", "value": '["x","y"]'},
    ]
    status = finished("True", "Succeeded", results) | {"extraFields": {"blah": 1}}
    await write_status(kube, producer, status)

    consumer = await wait_custom_run(kube, namespace, f"{pr_name}-consumer")
    assert consumer["spec"]["params"] == [
        {"name": "from-producer", "value": "aResultValue"},
        {"name": "list", "value": ["x", "y"]},
    ]
    await write_status(kube, consumer, finished("True", "Succeeded"))

    done = await wait_for(kube, PIPELINE_RUNS, namespace, pr_name, succeeded_with("Succeeded"))
    assert done["status"]["results"] == [{"name": "out", "value": "aResultValue"}]
    kinds = sorted(child["kind"] for child in done["status"]["childReferences"])
    assert kinds == ["CustomRun", "CustomRun"]


async def test_cancelling_the_pipelinerun_patches_every_customrun(
    kube: KubeClient, namespace: str
) -> None:
    custom = {"apiVersion": API_VERSION, "kind": KIND}
    pipeline_spec = {
        "tasks": [{"name": "fast", "taskRef": custom}, {"name": "slow", "taskRef": custom}]
    }
    pr = await create_pipeline_run(kube, namespace, pipeline_spec)
    pr_name = pr["metadata"]["name"]
    fast, slow = await asyncio.gather(
        wait_custom_run(kube, namespace, f"{pr_name}-fast"),
        wait_custom_run(kube, namespace, f"{pr_name}-slow"),
    )
    slow = await write_status(kube, slow, started(1))
    fast = await write_status(kube, fast, finished("True", "Succeeded"))
    # Tekton cancels the children its status lists (from its cache): wait for both.
    await wait_for(
        kube,
        PIPELINE_RUNS,
        namespace,
        pr_name,
        lambda obj: len(obj.get("status", {}).get("childReferences") or []) == 2,
    )

    await kube.patch(PIPELINE_RUNS.path(namespace, pr_name), {"spec": {"status": "Cancelled"}})

    def cancel_requested(obj: JSON) -> bool:
        return obj["spec"].get("status") == "RunCancelled"

    slow = await wait_for(kube, CUSTOM_RUNS, namespace, slow["metadata"]["name"], cancel_requested)
    assert slow["spec"]["statusMessage"] == CANCELLED_MSG
    # Tekton patches finished runs too: the generation moves, the status must not.
    fast = await wait_for(kube, CUSTOM_RUNS, namespace, fast["metadata"]["name"], cancel_requested)
    assert fast["metadata"]["generation"] == 2
    assert (condition(fast) or {})["status"] == "True"

    await write_status(kube, slow, finished("False", "CustomRunCancelled"))
    done = await wait_for(kube, PIPELINE_RUNS, namespace, pr_name, failed_with("Cancelled"))
    assert "cancelled" in (condition(done) or {})["message"].lower()


async def test_pipelinerun_timeout_cancels_customruns_with_the_timeout_message(
    kube: KubeClient, namespace: str
) -> None:
    pipeline_spec = {
        "tasks": [{"name": "waits", "taskRef": {"apiVersion": API_VERSION, "kind": KIND}}]
    }
    pr = await create_pipeline_run(kube, namespace, pipeline_spec, timeouts={"pipeline": "3s"})
    pr_name = pr["metadata"]["name"]
    run = await wait_custom_run(kube, namespace, f"{pr_name}-waits")
    await write_status(kube, run, started(1))

    cancelled = await wait_for(
        kube,
        CUSTOM_RUNS,
        namespace,
        run["metadata"]["name"],
        lambda obj: obj["spec"].get("status") == "RunCancelled",
        timeout=60,
    )
    assert cancelled["spec"]["statusMessage"] == TIMED_OUT_MSG
    await write_status(kube, cancelled, finished("False", "CustomRunCancelled"))
    await wait_for(kube, PIPELINE_RUNS, namespace, pr_name, failed_with("PipelineRunTimeout"))
