"""StepActions on the real node: Tekton's controller and Pipeline-in-Pod agree.

The StepActions are the seed's (Tekton's ``docs/stepactions.md``): params of every type,
results passed between steps and fetched as task results (the kaniko-style digest), the
same StepAction twice, ``when`` on steps, workingDir, securityContext and a volumeMount
named by a param. Each pipeline runs through the differential harness of
``test_pipeline_in_pod.py``: once by Tekton's PipelineRun controller, once in one Pod.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.controllers import create_object
from customtask_sdk.testing.node import Node
from examples.pipeline_in_pod.controller import custom_run
from tests.node.corpus import done, sh, t, tekton_run
from tests.node.test_pipeline_in_pod import (
    pip,  # noqa: F401 - the controller fixture, shared with the harness
    pip_run,
)

STEP_ACTIONS_V1BETA1 = Resource("tekton.dev", "v1beta1", "stepactions", "StepAction")
STEP_ACTIONS_V1ALPHA1 = Resource("tekton.dev", "v1alpha1", "stepactions", "StepAction")

#: name -> (API version, spec): the StepActions every test's namespace holds.
STEP_ACTIONS: dict[str, tuple[Resource, JSON]] = {
    "say": (
        STEP_ACTIONS_V1BETA1,
        {
            "params": [{"name": "word"}, {"name": "suffix", "default": "!"}],
            "results": [{"name": "out"}],
            "image": "busybox",
            "env": [{"name": "W", "value": "$(params.word)$(params.suffix)"}],
            "script": 'printf "%s" "$W" > $(step.results.out.path)',
        },
    ),
    "join": (
        STEP_ACTIONS_V1ALPHA1,
        {
            "params": [
                {"name": "parts", "type": "array"},
                {"name": "obj", "type": "object", "properties": {"k": {"type": "string"}}},
            ],
            "results": [{"name": "out"}],
            "image": "busybox",
            "command": ["sh", "-c", 'printf "%s," "$@" > $(step.results.out.path)', "--"],
            "args": ["$(params.parts[*])", "$(params.obj.k)"],
        },
    ),
    "kaniko": (
        STEP_ACTIONS_V1BETA1,
        {
            "params": [{"name": "image"}],
            "results": [{"name": "digest"}, {"name": "url"}],
            "image": "busybox",
            "env": [{"name": "IMAGE", "value": "$(params.image)"}],
            "script": (
                'printf "sha256:%s" "$(printf %s "$IMAGE" | tr / -)" > '
                "$(step.results.digest.path)\n"
                'printf "%s" "$IMAGE" > $(step.results.url.path)\n'
            ),
        },
    ),
    "where": (
        STEP_ACTIONS_V1BETA1,
        {
            "params": [{"name": "dir", "default": "/w/d"}],
            "results": [{"name": "out"}],
            "image": "busybox",
            "workingDir": "$(params.dir)",
            "securityContext": {"runAsUser": 0},
            "script": 'printf "%s:%s" "$(pwd)" "$(id -u)" > $(step.results.out.path)',
        },
    ),
    "read-config": (
        STEP_ACTIONS_V1BETA1,
        {
            "params": [{"name": "volume"}],
            "results": [{"name": "out"}],
            "volumeMounts": [{"name": "$(params.volume)", "mountPath": "/config"}],
            "image": "busybox",
            "script": "cat /config/x > $(step.results.out.path)",
        },
    ),
}


def ref(action: str, step: str, *params: tuple[str, Any], **fields: Any) -> JSON:
    """A step running StepAction ``action`` with ``params``."""
    given = [{"name": name, "value": value} for name, value in params]
    return {"name": step, "ref": {"name": action}, "params": given, **fields}


def fetch(*results: tuple[str, str]) -> list[JSON]:
    """Task results fetched from step results: (task result, ``step.result``)."""
    out = []
    for name, source in results:
        step, result = source.split(".")
        out.append({"name": name, "value": f"$(steps.{step}.results.{result})"})
    return out


def result(name: str, task: str, source: str | None = None) -> JSON:
    return {"name": name, "value": f"$(tasks.{task}.results.{source or name})"}


#: name -> pipelineSpec, each run by Tekton and by Pipeline-in-Pod.
CORPUS: dict[str, JSON] = {
    "stepaction-params": {
        "params": [{"name": "word", "default": "hello"}],
        "tasks": [
            t(
                "a",
                ref("say", "greet", ("word", "$(params.word)")),
                ref("join", "join", ("parts", ["x", "$(params.word)"]), ("obj", {"k": "v"})),
                params=[{"name": "word", "value": "$(params.word)"}],
                spec={
                    "params": [{"name": "word"}],
                    "results": fetch(("greeting", "greet.out"), ("joined", "join.out")),
                },
            )
        ],
        "results": [result("greeting", "a"), result("joined", "a")],
    },
    "stepaction-results-between-steps-and-tasks": {
        "tasks": [
            t(
                "build",
                ref("kaniko", "kaniko", ("image", "reg/app")),
                ref("say", "show", ("word", "$(steps.kaniko.results.digest)")),
                spec={"results": fetch(("digest", "kaniko.digest"), ("shown", "show.out"))},
            ),
            t(
                "deploy",
                sh('printf "deploy-$(params.d)" > $(results.out.path)'),
                params=[{"name": "d", "value": "$(tasks.build.results.digest)"}],
                spec={"params": [{"name": "d"}], "results": [{"name": "out"}]},
            ),
        ],
        "results": [
            result("digest", "build"),
            result("shown", "build"),
            result("deployed", "deploy", "out"),
        ],
    },
    "stepaction-twice": {
        "tasks": [
            t(
                "a",
                ref("kaniko", "one", ("image", "reg/one")),
                ref("kaniko", "two", ("image", "reg/two")),
                spec={"results": fetch(("d1", "one.digest"), ("d2", "two.digest"))},
            )
        ],
        "results": [result("d1", "a"), result("d2", "a")],
    },
    "stepaction-when-on-steps": {
        "tasks": [
            t(
                "a",
                ref("kaniko", "build", ("image", "reg/app")),
                ref(
                    "say",
                    "skipped",
                    ("word", "no"),
                    when=[
                        {
                            "input": "$(steps.build.results.url)",
                            "operator": "in",
                            "values": ["other"],
                        }
                    ],
                ),
                ref(
                    "say",
                    "ran",
                    ("word", "yes"),
                    when=[
                        {
                            "input": "$(steps.build.results.url)",
                            "operator": "notin",
                            "values": ["other"],
                        }
                    ],
                ),
                spec={"results": fetch(("ran", "ran.out"))},
            )
        ],
        "results": [result("ran", "a")],
    },
    "stepaction-workdir-security-volume": {
        "tasks": [
            t(
                "a",
                ref("where", "where"),
                sh(
                    "printf cfg > /scratch/x",
                    name="write",
                    volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
                ),
                ref("read-config", "read", ("volume", "scratch")),
                spec={
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "results": fetch(("where", "where.out"), ("read", "read.out")),
                },
            )
        ],
        "results": [result("where", "a"), result("read", "a")],
    },
}


@pytest.fixture
async def step_actions(node: Node, node_namespace: str) -> None:
    """The StepActions, created in the test's namespace (deleted with it)."""
    for name, (resource, spec) in STEP_ACTIONS.items():
        await create_object(node.client, resource, node_namespace, spec, name=name)


@pytest.mark.parametrize("case", sorted(CORPUS))
@pytest.mark.usefixtures("pip", "step_actions")
async def test_tekton_and_pipeline_in_pod_agree_on_stepactions(
    node: Node, node_namespace: str, case: str
) -> None:
    spec = CORPUS[case]
    tekton, ours = await asyncio.gather(
        tekton_run(node.client, node_namespace, spec), pip_run(node.client, node_namespace, spec)
    )
    assert ours == tekton
    assert ours[0] == "True", ours


async def _failed(node: Node, namespace: str, spec: JSON) -> JSON:
    name = f"pip-{uuid.uuid4().hex[:6]}"
    await node.client.create(CUSTOM_RUNS.path(namespace), custom_run(name, {"pipelineSpec": spec}))
    run = await wait_for(node.client, CUSTOM_RUNS, namespace, name, done, timeout=60)
    found = condition(run) or {}
    assert found.get("status") == "False", found
    return found


@pytest.mark.usefixtures("pip", "step_actions")
async def test_a_ref_with_a_forbidden_field_fails_naming_the_field_as_tekton_does(
    node: Node, node_namespace: str
) -> None:
    step = {**ref("kaniko", "build", ("image", "reg/app")), "image": "ubuntu"}
    spec = {"tasks": [t("a", step)]}
    found = await _failed(node, node_namespace, spec)
    assert found["reason"] == "InvalidPipeline"
    assert found["message"] == "tasks[a].steps[0].image: image cannot be used with Ref"
    # Tekton's controller refuses it too, with the same words for the same field.
    run = await create_object(
        node.client, PIPELINE_RUNS, node_namespace, {"pipelineSpec": spec}, name="forbidden"
    )
    run = await wait_for(node.client, PIPELINE_RUNS, node_namespace, "forbidden", done, timeout=60)
    theirs = condition(run) or {}
    assert theirs.get("status") == "False"
    assert "image cannot be used with Ref: tasks[0].taskSpec.steps[0].image" in theirs.get(
        "message", ""
    ), theirs


@pytest.mark.usefixtures("pip", "step_actions")
async def test_a_missing_required_param_fails_naming_the_step_and_the_param(
    node: Node, node_namespace: str
) -> None:
    found = await _failed(node, node_namespace, {"tasks": [t("a", ref("kaniko", "build"))]})
    assert found["reason"] == "InvalidPipeline"
    assert "tasks[a].steps[0].params" in found["message"]
    assert "step 'build'" in found["message"]
    assert "'image'" in found["message"]


@pytest.mark.usefixtures("pip", "step_actions")
async def test_a_missing_stepaction_fails_the_run_at_the_start(
    node: Node, node_namespace: str
) -> None:
    found = await _failed(node, node_namespace, {"tasks": [t("a", ref("nope", "s"))]})
    assert found["reason"] == "StepActionNotFound"
    assert "'nope'" in found["message"]


@pytest.mark.usefixtures("pip", "step_actions")
async def test_a_skipped_step_is_reported_skipped_with_exit_code_0_and_cel_decides_in_the_pod(
    node: Node, node_namespace: str
) -> None:
    spec = CORPUS["stepaction-when-on-steps"]
    task = spec["tasks"][0]
    cel = ref(
        "say", "cel", ("word", "c"), when=[{"cel": "'$(steps.build.results.url)' == 'reg/app'"}]
    )
    task = {**task, "taskSpec": {**task["taskSpec"], "steps": [*task["taskSpec"]["steps"], cel]}}
    name = f"pip-{uuid.uuid4().hex[:6]}"
    body = custom_run(name, {"pipelineSpec": {"tasks": [task]}})
    await node.client.create(CUSTOM_RUNS.path(node_namespace), body)
    run = await wait_for(node.client, CUSTOM_RUNS, node_namespace, name, done, timeout=120)
    assert (condition(run) or {}).get("status") == "True"
    (state,) = run["status"]["extraFields"]["tasks"]
    steps = {s["name"]: (s["exitCode"], s["reason"]) for s in state["steps"]}
    assert steps == {
        "build": (0, "Completed"),
        "skipped": (0, "Skipped"),
        "ran": (0, "Completed"),
        "cel": (0, "Completed"),
    }
