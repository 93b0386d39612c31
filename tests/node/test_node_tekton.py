"""Tekton's own controller running TaskRuns and PipelineRuns on the real node.

This is Tekton's code, not ours: when these pass, Pods, images, results, sidecars and
cancellation work on the node as on a real cluster.
"""

from __future__ import annotations

from customtask_sdk.client import JSON, PIPELINE_RUNS, TASK_RUNS, Resource
from customtask_sdk.testing import condition, create_object, wait_deleted, wait_for
from customtask_sdk.testing.node import Node

PODS = Resource("", "v1", "pods", "Pod")


def done(run: JSON) -> bool:
    found = condition(run)
    return found is not None and found.get("status") in ("True", "False")


def sidecar_stopped(pod: JSON) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return any(c["name"] == "sidecar-helper" and "terminated" in c["state"] for c in statuses)


def outcome(run: JSON) -> tuple[str, str]:
    """The Succeeded condition's status and reason."""
    found = condition(run) or {}
    return found.get("status", ""), found.get("reason", "")


async def test_taskrun_with_script_command_working_dir_sidecar_and_results(
    node: Node, node_namespace: str
) -> None:
    task_spec = {
        "results": [{"name": "greeting"}, {"name": "where"}],
        "sidecars": [
            {
                "name": "helper",
                "image": "busybox",
                # `sh` as PID 1 ignores SIGTERM: trap it so the sidecar stops at once.
                "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
            }
        ],
        "steps": [
            {
                "name": "script",
                "image": "bash:5",
                "script": "#!/usr/bin/env bash\nset -eu\n"
                'words=(hello from bash)\necho -n "${words[*]}" > $(results.greeting.path)\n',
            },
            {
                "name": "command",
                "image": "ubuntu",
                "workingDir": "/workspace/deep/dir",
                "command": ["sh", "-c"],
                "args": ["pwd | tr -d '\\n' > $(results.where.path)"],
            },
        ],
    }
    created = await create_object(node.client, TASK_RUNS, node_namespace, {"taskSpec": task_spec})
    name = created["metadata"]["name"]

    run = await wait_for(node.client, TASK_RUNS, node_namespace, name, done, timeout=90)

    assert outcome(run)[0] == "True", run["status"]
    results = {r["name"]: r["value"] for r in run["status"]["results"]}
    assert results == {"greeting": "hello from bash", "where": "/workspace/deep/dir"}
    assert [s["name"] for s in run["status"]["sidecars"]] == ["helper"]
    # Tekton stops the sidecar by swapping its image for the nop image.
    pod = await wait_for(
        node.client, PODS, node_namespace, run["status"]["podName"], sidecar_stopped, timeout=60
    )
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "sidecar-helper")
    assert sidecar["image"] == node.tekton_images["nop-image"]


async def test_pipelinerun_of_three_tasks_passing_results_with_finally(
    node: Node, node_namespace: str
) -> None:
    def adder(param: str | None) -> JSON:
        value = f"$(( $(params.{param}) + 1 ))" if param else "1"
        return {
            "params": [{"name": param}] if param else [],
            "results": [{"name": "n"}],
            "steps": [
                {"name": "add", "image": "alpine", "script": f"echo -n {value} > $(results.n.path)"}
            ],
        }

    pipeline = {
        "results": [{"name": "total", "value": "$(tasks.third.results.n)"}],
        "tasks": [
            {"name": "first", "taskSpec": adder(None)},
            {
                "name": "second",
                "params": [{"name": "in", "value": "$(tasks.first.results.n)"}],
                "taskSpec": adder("in"),
            },
            {
                "name": "third",
                "params": [{"name": "in", "value": "$(tasks.second.results.n)"}],
                "taskSpec": adder("in"),
            },
        ],
        "finally": [
            {
                "name": "check",
                "params": [
                    {"name": "total", "value": "$(tasks.third.results.n)"},
                    {"name": "status", "value": "$(tasks.status)"},
                ],
                "taskSpec": {
                    "params": [{"name": "total"}, {"name": "status"}],
                    "steps": [
                        {
                            "name": "check",
                            "image": "busybox",
                            "script": 'test "$(params.total)" = 3 && '
                            'test "$(params.status)" = Succeeded',
                        }
                    ],
                },
            }
        ],
    }
    created = await create_object(
        node.client, PIPELINE_RUNS, node_namespace, {"pipelineSpec": pipeline}
    )
    name = created["metadata"]["name"]

    run = await wait_for(node.client, PIPELINE_RUNS, node_namespace, name, done, timeout=120)

    assert outcome(run)[0] == "True", run["status"]
    assert run["status"]["results"] == [{"name": "total", "value": "3"}]
    children = {c["pipelineTaskName"] for c in run["status"]["childReferences"]}
    assert children == {"first", "second", "third", "check"}


async def test_step_without_command_runs_the_image_entrypoint(
    node: Node, node_namespace: str
) -> None:
    # Tekton's controller looks the image's entrypoint up in its registry itself: through
    # the node's HTTPS proxy, that is the local registry.
    version = node.binaries.versions.kubernetes
    task_spec = {
        "results": [{"name": "version"}],
        "steps": [
            {"name": "shell", "image": "ubuntu:24.04", "args": ["-c", "echo -n hi"]},
            {
                "name": "kubectl",
                "image": node.image("kubectl", version),
                "args": ["version", "--client", "-o", "yaml"],
            },
            {
                "name": "result",
                "image": "busybox",
                "args": ["-c", f"echo -n {version} > $(results.version.path)"],
            },
        ],
    }
    created = await create_object(node.client, TASK_RUNS, node_namespace, {"taskSpec": task_spec})
    name = created["metadata"]["name"]

    run = await wait_for(node.client, TASK_RUNS, node_namespace, name, done, timeout=90)

    assert outcome(run)[0] == "True", run["status"]
    assert run["status"]["results"] == [{"name": "version", "type": "string", "value": version}]


SLEEPER = {"steps": [{"name": "sleep", "image": "busybox", "command": ["sleep", "300"]}]}


def running(run: JSON) -> bool:
    found = condition(run)
    return found is not None and found.get("reason") == "Running"


async def test_cancelled_taskrun_stops_and_its_pod_is_deleted(
    node: Node, node_namespace: str
) -> None:
    created = await create_object(node.client, TASK_RUNS, node_namespace, {"taskSpec": SLEEPER})
    name = created["metadata"]["name"]
    run = await wait_for(node.client, TASK_RUNS, node_namespace, name, running, timeout=90)
    pod = run["status"]["podName"]

    await node.client.patch(
        TASK_RUNS.path(node_namespace, name), {"spec": {"status": "TaskRunCancelled"}}
    )

    run = await wait_for(node.client, TASK_RUNS, node_namespace, name, done, timeout=60)
    assert outcome(run) == ("False", "TaskRunCancelled")
    await wait_deleted(node.client, PODS, node_namespace, pod, timeout=60)


async def test_timed_out_taskrun_fails_with_timeout(node: Node, node_namespace: str) -> None:
    spec = {"taskSpec": SLEEPER, "timeout": "5s"}
    created = await create_object(node.client, TASK_RUNS, node_namespace, spec)
    name = created["metadata"]["name"]

    run = await wait_for(node.client, TASK_RUNS, node_namespace, name, done, timeout=90)

    assert outcome(run) == ("False", "TaskRunTimeout")
    steps = run["status"]["steps"]
    assert steps[0]["terminated"]["reason"] == "TaskRunTimeout", steps


async def test_volume_claim_template_workspace_is_shared_between_tasks(
    node: Node, node_namespace: str
) -> None:
    # A PVC per run from the hostPath provisioner; Tekton's affinity assistant (a
    # StatefulSet) keeps both tasks on the claim's node.
    pipeline = {
        "workspaces": [{"name": "shared"}],
        "tasks": [
            {
                "name": "write",
                "workspaces": [{"name": "data", "workspace": "shared"}],
                "taskSpec": {
                    "workspaces": [{"name": "data"}],
                    "steps": [
                        {
                            "name": "write",
                            "image": "busybox",
                            "script": "echo -n kept > $(workspaces.data.path)/file",
                        }
                    ],
                },
            },
            {
                "name": "read",
                "runAfter": ["write"],
                "workspaces": [{"name": "data", "workspace": "shared"}],
                "taskSpec": {
                    "workspaces": [{"name": "data"}],
                    "results": [{"name": "content"}],
                    "steps": [
                        {
                            "name": "read",
                            "image": "busybox",
                            "script": "cat $(workspaces.data.path)/file > $(results.content.path)",
                        }
                    ],
                },
            },
        ],
        "results": [{"name": "content", "value": "$(tasks.read.results.content)"}],
    }
    claim = {
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "16Mi"}},
        }
    }
    spec = {
        "pipelineSpec": pipeline,
        "workspaces": [{"name": "shared", "volumeClaimTemplate": claim}],
    }
    created = await create_object(node.client, PIPELINE_RUNS, node_namespace, spec)
    name = created["metadata"]["name"]

    run = await wait_for(node.client, PIPELINE_RUNS, node_namespace, name, done, timeout=120)

    assert outcome(run)[0] == "True", run["status"]
    assert run["status"]["results"] == [{"name": "content", "value": "kept"}]
