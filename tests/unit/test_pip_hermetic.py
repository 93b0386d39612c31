"""Pre/post steps and hermetic execution in the Pipeline-in-Pod compiler (TEP-0080/0044)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.pipeline_in_pod.__main__ import compile_file
from examples.pipeline_in_pod.compiler import CompileError, Plan, RunContext, compile_pipeline
from examples.pipeline_in_pod.hermetic import (
    CHECK_CONTAINER,
    EXECUTION_MODE,
    POST_STEPS,
    PRE_STEPS,
    UNAVAILABLE,
    task_spec,
)
from examples.pipeline_in_pod.model import PipelineInPodInput, PipelineSpec, TaskSpec
from examples.pipeline_in_pod.status import read_pod
from examples.pipeline_in_pod.stepactions import StepActionSpec
from tests.unit.test_pip_compiler import (
    CTX,
    IMAGES,
    build,
    command,
    containers,
    step,
    task,
    waited,
)

HERMETIC = {EXECUTION_MODE: "hermetic"}


def named(name: str) -> dict[str, Any]:
    return step("echo", name, name=name)


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def fenced(plan: Plan) -> list[str]:
    return [
        c["name"]
        for c in plan.pod_spec["containers"]
        if env(c).get("TEKTON_HERMETIC") == "1" and env(c).get("TEKTON_RESOURCE_NAME") == ""
    ]


def build_task(spec: dict[str, Any], ctx: RunContext = CTX, **fields: Any) -> Plan:
    return build([{"name": "t", "taskSpec": spec, **fields}], ctx=ctx)


def test_pre_steps_then_steps_then_post_steps_one_after_another() -> None:
    plan = build_task(
        {"preSteps": [named("fetch")], "steps": [named("build")], "postSteps": [named("upload")]}
    )
    ordered = [c["name"] for c in plan.pod_spec["containers"]]
    assert ordered == ["step-t-fetch", "step-t-build", "step-t-upload"]
    by_name = containers(plan)
    assert waited(by_name["step-t-build"]) == "/tekton/run/t/0/out"
    assert waited(by_name["step-t-upload"]) == "/tekton/run/t/1/out"
    assert command(by_name["step-t-upload"]) == ["echo", "upload"]
    assert [(s.name, s.phase, s.hermetic) for s in plan.task("t").steps] == [
        ("fetch", "pre", False),
        ("build", "steps", False),
        ("upload", "post", False),
    ]
    assert fenced(plan) == []  # not hermetic: exactly append(pre, steps, post)
    assert [c["name"] for c in plan.pod_spec["initContainers"]] == ["prepare"]


def test_a_hermetic_task_isolates_its_steps_only_and_is_checked_first() -> None:
    plan = build_task(
        {
            "metadata": {"annotations": HERMETIC},
            "preSteps": [named("fetch")],
            "steps": [named("build"), named("test")],
            "postSteps": [named("upload")],
        }
    )
    assert fenced(plan) == ["step-t-build", "step-t-test"]
    assert [s.hermetic for s in plan.task("t").steps] == [False, True, True, False]
    check = plan.pod_spec["initContainers"][-1]
    assert check["name"] == f"{CHECK_CONTAINER}-0"
    assert check["image"] == "busybox"  # the steps' image and securityContext, as they run
    assert env(check) == {"TEKTON_HERMETIC": "1"}
    args = check["args"]
    assert args[args.index("-entrypoint") :] == [
        "-entrypoint",
        "/tekton/bin/entrypoint",
        "--",
        "cp",
        "/tekton/bin/entrypoint",
        "/dev/null",
    ]
    assert {"name": CHECK_CONTAINER, "emptyDir": {}} in plan.pod_spec["volumes"]


def test_one_check_per_image_and_security_context() -> None:
    root = {"securityContext": {"runAsUser": 0}}
    plan = build_task(
        {
            "metadata": {"annotations": HERMETIC},
            "steps": [named("a"), named("b"), {**named("c"), **root}, {**named("d"), "image": "x"}],
        }
    )
    checks = [c for c in plan.pod_spec["initContainers"] if c["name"].startswith(CHECK_CONTAINER)]
    assert [(c["image"], c.get("securityContext")) for c in checks] == [
        ("busybox", None),
        ("busybox", {"runAsUser": 0}),
        ("x", None),
    ]


def test_hermetic_env_is_set_last_so_it_wins_over_the_steps_env_from() -> None:
    spec = {
        "metadata": {"annotations": HERMETIC},
        "steps": [{**named("a"), "env": [{"name": "X", "value": "1"}], "envFrom": [{}]}],
    }
    container = containers(build_task(spec))["step-t-a"]
    assert [e["name"] for e in container["env"]] == ["X", "TEKTON_HERMETIC", "TEKTON_RESOURCE_NAME"]


def test_pre_and_post_steps_named_by_annotations_on_a_task() -> None:
    # A referenced Task (frozen with its annotations) stays a valid Tekton Task.
    spec = {
        "metadata": {"annotations": {PRE_STEPS: "fetch, deps", POST_STEPS: "upload", **HERMETIC}},
        "steps": [named("fetch"), named("deps"), named("build"), named("upload")],
    }
    plan = build_task(spec)
    assert [s.phase for s in plan.task("t").steps] == ["pre", "pre", "steps", "post"]
    assert fenced(plan) == ["step-t-build"]


def test_the_whole_run_or_one_task_through_task_run_specs() -> None:
    tasks = [task("a", named("x")), task("b", named("y"))]
    whole = build(tasks, ctx=replace(CTX, annotations=HERMETIC))
    assert fenced(whole) == ["step-a-x", "step-b-y"]
    one = build(tasks, ctx=replace(CTX, task_annotations={"b": HERMETIC}))
    assert fenced(one) == ["step-b-y"]
    # Tekton's order: taskRunSpecs win over the run, which wins over the task's own.
    spec = {"metadata": {"annotations": {PRE_STEPS: "a"}}, "steps": [named("a"), named("b")]}
    moved = build_task(spec, replace(CTX, task_annotations={"t": {PRE_STEPS: ""}}))
    assert [s.phase for s in moved.task("t").steps] == ["steps", "steps"]


def test_task_run_specs_are_read_from_the_custom_spec() -> None:
    given = PipelineInPodInput.model_validate(
        {
            "taskRunSpecs": [{"pipelineTaskName": "b", "metadata": {"annotations": HERMETIC}}],
            "revision": "main",
        }
    )
    assert given.taskRunSpecs[0].metadata.annotations == HERMETIC
    assert given.params == {"revision": "main"}


def test_a_finally_task_can_be_hermetic() -> None:
    plan = build(
        [task("a")],
        finally_=[task("f", named("report"), spec={"metadata": {"annotations": HERMETIC}})],
    )
    assert fenced(plan) == ["step-f-report"]


@pytest.mark.parametrize(
    ("spec", "ctx", "field", "says"),
    [
        (
            {"metadata": {"annotations": {PRE_STEPS: "b"}}, "steps": [named("a"), named("b")]},
            CTX,
            f"tasks[t].metadata.annotations[{PRE_STEPS}]",
            "must be the task's first 1 step(s), in order (its steps: a, b)",
        ),
        (
            {"metadata": {"annotations": {POST_STEPS: "a"}}, "steps": [named("a"), named("b")]},
            CTX,
            f"tasks[t].metadata.annotations[{POST_STEPS}]",
            "last 1 step(s)",
        ),
        (
            {
                "metadata": {"annotations": {PRE_STEPS: "a", POST_STEPS: "b"}},
                "steps": [named("a"), named("b")],
            },
            CTX,
            "tasks[t].metadata.annotations",
            "leave no steps",
        ),
        (
            {
                "metadata": {"annotations": {PRE_STEPS: "a"}},
                "preSteps": [named("p")],
                "steps": [named("a"), named("b")],
            },
            CTX,
            f"tasks[t].metadata.annotations[{PRE_STEPS}]",
            "one way",
        ),
        (
            {"metadata": {"annotations": {EXECUTION_MODE: "hermetc"}}, "steps": [named("a")]},
            CTX,
            f"tasks[t].metadata.annotations[{EXECUTION_MODE}]",
            "the only execution mode is 'hermetic'",
        ),
        (
            {"steps": [named("a")], "sidecars": [{"name": "s", "image": "busybox"}]},
            replace(CTX, annotations=HERMETIC),
            "tasks[t].sidecars",
            "cannot have sidecars",
        ),
        (
            {"steps": [{**named("a"), "env": [{"name": "TEKTON_RESOURCE_NAME", "value": "x"}]}]},
            replace(CTX, annotations=HERMETIC),
            "tasks[t].steps[0].env[TEKTON_RESOURCE_NAME]",
            "is set by hermetic execution",
        ),
        (
            {
                "metadata": {"annotations": {PRE_STEPS: "a"}},
                "steps": [named("a"), {**named("b"), "securityContext": {"runAsUser": 1000}}],
            },
            replace(CTX, annotations=HERMETIC),
            "tasks[t].steps[1].securityContext.runAsUser",
            "is 1000: hermetic steps need to run as root",
        ),
        (
            {"steps": [named("a")], "stepTemplate": {"securityContext": {"runAsNonRoot": True}}},
            replace(CTX, annotations=HERMETIC),
            "tasks[t].steps[0].securityContext.runAsNonRoot",
            "need to run as root",
        ),
        (
            {"steps": [named("a")]},
            replace(
                CTX,
                annotations=HERMETIC,
                pod_template={"securityContext": {"runAsUser": 65532}},
            ),
            "podTemplate.securityContext.runAsUser",
            "need to run as root",
        ),
        (
            {"steps": [{**named("a"), "securityContext": {"capabilities": {"drop": ["ALL"]}}}]},
            replace(CTX, annotations=HERMETIC),
            "tasks[t].steps[0].securityContext.capabilities.drop",
            "drops SETGID and SETUID",
        ),
        (
            {"steps": [named("a")]},
            replace(CTX, annotations={PRE_STEPS: "a"}),
            f"metadata.annotations[{PRE_STEPS}]",
            "names steps of one task",
        ),
        (
            {"steps": [named("a")]},
            replace(CTX, task_annotations={"nope": HERMETIC}),
            "taskRunSpecs[nope]",
            "names no pipeline task",
        ),
    ],
)
def test_what_cannot_work_is_rejected_naming_the_field(
    spec: dict[str, Any], ctx: RunContext, field: str, says: str
) -> None:
    with pytest.raises(CompileError) as caught:
        build_task(spec, ctx)
    assert caught.value.field == field
    assert says in caught.value.message


def test_dropped_capabilities_given_back_are_fine() -> None:
    context = {"capabilities": {"drop": ["ALL"], "add": ["SETUID", "CAP_SETGID"]}}
    spec = {"steps": [{**named("a"), "securityContext": context}]}
    assert fenced(build_task(spec, replace(CTX, annotations=HERMETIC))) == ["step-t-a"]


def test_a_failed_check_fails_the_run_hermetic_unavailable_before_any_step() -> None:
    plan = build_task({"metadata": {"annotations": HERMETIC}, "steps": [named("a")]})
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "status": {
            "phase": "Failed",
            "initContainerStatuses": [
                {"name": "prepare", "state": {"terminated": {"exitCode": 0}}},
                {"name": f"{CHECK_CONTAINER}-0", "state": {"terminated": {"exitCode": 1}}},
            ],
            "containerStatuses": [
                {"name": "step-t-a", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }
    verdict = read_pod(plan, pod).verdict
    assert verdict is not None
    assert (verdict.succeeded, verdict.reason) == (False, UNAVAILABLE)
    assert "no step ran, none ran with the network instead" in verdict.message
    assert f"kubectl logs -n ns p -c {CHECK_CONTAINER}-0" in verdict.message


def test_the_frozen_task_keeps_its_pre_and_post_steps() -> None:
    spec = TaskSpec.model_validate({"preSteps": [named("a")], "steps": [named("b")]})
    again = TaskSpec.model_validate(spec.model_dump(by_alias=True, exclude_none=True))
    assert again == spec


@pytest.mark.parametrize("form", ["inline", "annotations"])
def test_a_step_action_as_a_pre_step_is_inlined_and_keeps_its_phase(form: str) -> None:
    echo = StepActionSpec.model_validate(
        {"params": [{"name": "word"}], "image": "busybox", "command": ["echo", "$(params.word)"]}
    )
    fetch = {"name": "fetch", "ref": {"name": "echo"}, "params": [{"name": "word", "value": "hi"}]}
    spec: dict[str, Any] = {"metadata": {"annotations": HERMETIC}}
    if form == "inline":
        spec.update(preSteps=[fetch], steps=[named("build")])
    else:
        spec["metadata"]["annotations"][PRE_STEPS] = "fetch"
        spec["steps"] = [fetch, named("build")]
    pipeline = PipelineSpec.model_validate({"tasks": [{"name": "t", "taskSpec": spec}]})
    assert pipeline.tasks[0].taskSpec is not None
    tasks = {"t": pipeline.tasks[0].taskSpec}
    plan = compile_pipeline(pipeline, tasks, {}, [], CTX, IMAGES, {"echo": echo})
    assert command(containers(plan)["step-t-fetch"]) == ["echo", "hi"]
    assert [(s.phase, s.hermetic) for s in plan.task("t").steps] == [
        ("pre", False),
        ("steps", True),
    ]


def test_the_example_compiles_with_its_phases_and_the_runs_hermetic_build() -> None:
    path = Path(__file__).parents[2] / "examples" / "pipeline_in_pod" / "hermetic.yaml"
    pod_spec = compile_file(path, {"source": "s", "upload": "u"})
    hermetic = [c["name"] for c in pod_spec["containers"] if env(c).get("TEKTON_HERMETIC")]
    assert hermetic == ["step-scan-scan"]  # the Task's own phases; only scan is hermetic
    run = next(d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "CustomRun")
    given = PipelineInPodInput.model_validate(run["spec"]["customSpec"]["spec"])
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text())}
    pipeline = PipelineSpec.model_validate(docs["Pipeline"]["spec"])
    tasks = {
        "build": TaskSpec.model_validate(task_spec(docs["Task"])),
        "scan": pipeline.tasks[1].taskSpec,
    }
    ctx = replace(
        CTX,
        task_annotations={s.pipelineTaskName: s.metadata.annotations for s in given.taskRunSpecs},
    )
    plan = compile_pipeline(pipeline, tasks, given.params, [], ctx, IMAGES)
    assert [(s.name, s.phase, s.hermetic) for s in plan.task("build").steps] == [
        ("fetch", "pre", False),
        ("build", "steps", True),
        ("publish", "post", False),
    ]
