"""The delegated front door runs what the CustomRun front door runs: StepActions (local and
remote, frozen at the start), ``volumeClaimTemplate`` workspaces (a claim per run) and
pipelines in pipelines (the child's tasks in the same Pod)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
import yaml

from customtask_sdk import RetryLater
from examples.pipeline_in_pod.delegated import STEP_ACTIONS_ANNOTATION, pipeline_tasks
from examples.pipeline_in_pod.pods import PIPELINES, TASKS
from examples.pipeline_in_pod.step_action_sources import RESOLUTION_REQUESTS, STEP_ACTIONS
from tests.unit.test_pip_tekton_status import FakeClient, cond_of, pipeline_run, reconciled

PODS_PATH = "/api/v1/namespaces/ns/pods"
CLAIMS_PATH = "/api/v1/namespaces/ns/persistentvolumeclaims"
SAY = {
    "params": [{"name": "word"}],
    "image": "say-image",
    "env": [{"name": "W", "value": "$(params.word)"}],
    "script": 'echo "$W"',
}
STEP = {"name": "greet", "ref": {"name": "say"}, "params": [{"name": "word", "value": "hi"}]}


class Client(FakeClient):
    """Answers GETs from ``objects``, and keeps what it is asked to create."""

    def __init__(self, objects: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(objects)
        self.created: dict[str, list[dict[str, Any]]] = {}

    async def create(self, path: str, body: dict[str, Any], params: object = None) -> object:
        self.created.setdefault(path, []).append(body)
        return await super().create(path, body, params)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)  # type: ignore[return-value]


def containers(client: Client) -> dict[str, dict[str, Any]]:
    ((pod,),) = [client.created[PODS_PATH]]
    return {c["name"]: c for c in pod["spec"]["containers"]}


def steps_of(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"pipelineSpec": {"tasks": [{"name": "a", "taskSpec": {"steps": list(steps)}}]}}


async def test_a_stepaction_runs_frozen_at_the_start_and_the_pipelinespec_keeps_its_ref() -> None:
    client = Client({STEP_ACTIONS.path("ns", "say"): {"spec": SAY}})
    status = await reconciled(pipeline_run(steps_of(STEP)), client)
    assert cond_of(status)[:2] == ("Unknown", "Running")
    assert status["pipelineSpec"]["tasks"][0]["taskSpec"]["steps"] == [STEP]  # type: ignore[index]
    assert json.loads(status["annotations"][STEP_ACTIONS_ANNOTATION]) == {"say": SAY}  # type: ignore[index]
    step = containers(client)["step-a-greet"]
    assert step["image"] == "say-image"
    assert {"name": "W", "value": "hi"} in step["env"]
    # Deleted once the run started, the StepAction is still the one read at the start
    # (the Pod made again here, as a reconcile that had not seen it yet would).
    (cond,) = status["conditions"]  # type: ignore[misc]
    status["conditions"] = [{**cond, "reason": "Started"}]
    later = Client()
    again = await reconciled(pipeline_run(steps_of(STEP), status), later)
    assert cond_of(again)[:2] == ("Unknown", "Running")
    assert containers(later)["step-a-greet"] == step


async def test_a_referenced_tasks_stepaction_runs_too() -> None:
    client = Client(
        {
            STEP_ACTIONS.path("ns", "say"): {"spec": SAY},
            TASKS.path("ns", "greet"): {"metadata": {}, "spec": {"steps": [STEP]}},
        }
    )
    spec = {"pipelineSpec": {"tasks": [{"name": "a", "taskRef": {"name": "greet"}}]}}
    status = await reconciled(pipeline_run(spec), client)
    assert cond_of(status)[:2] == ("Unknown", "Running")
    assert status["pipelineSpec"]["tasks"][0]["taskSpec"] == {"steps": [STEP]}  # type: ignore[index]
    assert containers(client)["step-a-greet"]["image"] == "say-image"


async def test_a_missing_stepaction_fails_the_run_at_once_naming_it() -> None:
    status = await reconciled(pipeline_run(steps_of(STEP)), Client())
    state, reason, message = cond_of(status)
    assert (state, reason) == ("False", "StepActionNotFound")
    assert "StepAction 'say' not found" in message
    assert status["completionTime"]


async def test_a_malformed_ref_fails_naming_the_task_and_the_step() -> None:
    step = {"name": "s", "ref": {"name": "say", "params": []}}
    status = await reconciled(pipeline_run(steps_of(step)), Client())
    state, _, message = cond_of(status)
    assert state == "False"
    assert message.startswith("tasks[a].steps[0].ref:")


async def test_a_remote_stepaction_is_read_through_a_resolutionrequest_the_run_owns() -> None:
    params = [{"name": "kind", "value": "stepaction"}, {"name": "name", "value": "say"}]
    step = {**STEP, "ref": {"resolver": "cluster", "params": params}}
    client = Client()
    with pytest.raises(RetryLater):
        await reconciled(pipeline_run(steps_of(step)), client)
    ((request,),) = [client.created[RESOLUTION_REQUESTS.path("ns")]]
    assert request["metadata"]["labels"]["resolution.tekton.dev/type"] == "cluster"
    assert request["spec"]["params"] == params
    (owner,) = request["metadata"]["ownerReferences"]
    # Not as its controller: Tekton's controller would take the PipelineRun up.
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("PipelineRun", "u", False)
    answer = {"apiVersion": "tekton.dev/v1beta1", "kind": "StepAction", "spec": SAY}
    data = base64.b64encode(yaml.safe_dump(answer).encode()).decode()
    path = RESOLUTION_REQUESTS.path("ns", request["metadata"]["name"])
    client.objects[path] = {
        "status": {"conditions": [{"type": "Succeeded", "status": "True"}], "data": data}
    }
    status = await reconciled(pipeline_run(steps_of(step)), client)
    assert cond_of(status)[:2] == ("Unknown", "Running")
    assert list(json.loads(status["annotations"][STEP_ACTIONS_ANNOTATION]).values()) == [SAY]  # type: ignore[index]
    assert containers(client)["step-a-greet"]["image"] == "say-image"


async def test_a_failed_remote_resolution_fails_the_run_with_the_resolvers_message() -> None:
    params = [{"name": "name", "value": "say"}]
    step = {**STEP, "ref": {"resolver": "cluster", "params": params}}
    client = Client()
    with pytest.raises(RetryLater):
        await reconciled(pipeline_run(steps_of(step)), client)
    ((request,),) = [client.created[RESOLUTION_REQUESTS.path("ns")]]
    path = RESOLUTION_REQUESTS.path("ns", request["metadata"]["name"])
    failed = {"type": "Succeeded", "status": "False", "message": "no such StepAction"}
    client.objects[path] = {"status": {"conditions": [failed]}}
    state, reason, message = cond_of(await reconciled(pipeline_run(steps_of(step)), client))
    assert (state, reason) == ("False", "StepActionResolutionFailed")
    assert "no such StepAction" in message


async def test_a_volumeclaimtemplate_gets_one_claim_named_and_owned_as_tekton_does() -> None:
    template = {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}
    }
    spec = {
        "pipelineSpec": {
            "workspaces": [{"name": "src"}],
            "tasks": [
                {
                    "name": "a",
                    "workspaces": [{"name": "w", "workspace": "src"}],
                    "taskSpec": {
                        "workspaces": [{"name": "w"}],
                        "steps": [{"image": "busybox", "script": "true"}],
                    },
                }
            ],
        },
        "workspaces": [{"name": "src", "volumeClaimTemplate": template}],
    }
    client = Client()
    status = await reconciled(pipeline_run(spec), client)
    assert cond_of(status)[:2] == ("Unknown", "Running")
    # Tekton's GeneratePVCNameFromWorkspaceBinding: sha256(workspace + the run's uid).
    name = f"pvc-{hashlib.sha256(b'srcu').hexdigest()[:10]}"
    ((claim,),) = [client.created[CLAIMS_PATH]]
    assert claim["metadata"]["name"] == name
    assert claim["spec"] == template["spec"]
    (owner,) = claim["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("PipelineRun", "pr", True)
    assert list(client.created) == [CLAIMS_PATH, PODS_PATH]  # the claim first
    ((pod,),) = [client.created[PODS_PATH]]
    claims = [
        v["persistentVolumeClaim"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
    ]
    assert claims == [{"claimName": name}]


BUSYBOX = {"steps": [{"image": "busybox", "script": "true"}]}


async def test_a_child_pipeline_is_frozen_embedded_and_its_tasks_run_in_the_pod() -> None:
    client = Client(
        {
            PIPELINES.path("ns", "child"): {
                "metadata": {},
                "spec": {"tasks": [{"name": "x", "taskRef": {"name": "build"}}]},
            },
            TASKS.path("ns", "build"): {"metadata": {}, "spec": BUSYBOX},
        }
    )
    inline = {"tasks": [{"name": "y", "taskSpec": BUSYBOX}]}
    spec = {
        "pipelineSpec": {
            "tasks": [
                {"name": "a", "taskSpec": BUSYBOX},
                {"name": "c", "pipelineRef": {"name": "child"}, "runAfter": ["a"]},
                {"name": "d", "pipelineSpec": inline},
            ]
        }
    }
    status = await reconciled(pipeline_run(spec), client)
    assert cond_of(status)[:2] == ("Unknown", "Running")
    frozen: dict[str, Any] = status["pipelineSpec"]  # type: ignore[assignment]
    child = frozen["tasks"][1]
    assert "pipelineRef" not in child
    assert child["pipelineSpec"]["tasks"] == [{"name": "x", "taskSpec": BUSYBOX}]
    assert frozen["tasks"][2] == spec["pipelineSpec"]["tasks"][2]  # type: ignore[index]
    # Each inner task runs (and gets its TaskRun) as <child task>-<inner>: Tekton's
    # TaskRun names (<run>-<child task>-<inner>).
    assert sorted(pipeline_tasks(frozen)) == ["a", "c-x", "d-y"]
    names = set(containers(client))
    assert {"step-c-x-unnamed-0", "step-d-y-unnamed-0"} <= names


async def test_a_pipeline_that_runs_itself_fails_at_once_naming_the_chain() -> None:
    looped = {"spec": {"tasks": [{"name": "again", "pipelineRef": {"name": "loop"}}]}}
    client = Client({PIPELINES.path("ns", "loop"): {"metadata": {}, **looped}})
    state, reason, message = cond_of(
        await reconciled(pipeline_run({"pipelineRef": {"name": "loop"}}), client)
    )
    assert (state, reason) == ("False", "PipelineValidationFailed")
    assert "loop -> loop" in message
