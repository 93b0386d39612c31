"""StepActions in Pipeline-in-Pod: resolution, Tekton's rules, params, results, step ``when``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.pipeline_in_pod.__main__ import compile_file
from examples.pipeline_in_pod.compiler import CompileError, Plan, compile_pipeline
from examples.pipeline_in_pod.model import PipelineSpec
from examples.pipeline_in_pod.status import read_pod
from examples.pipeline_in_pod.stepactions import StepActionSpec, ref_key, step_action_refs
from tests.unit.test_pip_compiler import CTX, IMAGES, command, containers, flag
from tests.unit.test_pip_local_pod import log, pod, run_pod, usable

#: StepActions from Tekton's docs/stepactions.md, as the tests name them.
ACTIONS: dict[str, dict[str, Any]] = {
    "echo": {
        "params": [{"name": "word"}, {"name": "suffix", "default": "!"}],
        "image": "busybox",
        "command": ["echo"],
        "args": ["$(params.word)$(params.suffix)"],
    },
    "git": {
        "params": [
            {
                "name": "gitrepo",
                "type": "object",
                "properties": {"url": {"type": "string"}, "commit": {"type": "string"}},
            },
            {"name": "flags", "type": "array"},
            {"name": "outputPath", "default": "/workspace"},
        ],
        "image": "some-git-image",
        "command": ["git-init"],
        "args": [
            "-url=$(params.gitrepo.url)",
            "-revision=$(params.gitrepo.commit)",
            "-output=$(params.outputPath)",
            "$(params.flags[*])",
        ],
        "workingDir": "$(params.outputPath)",
        "securityContext": {"runAsUser": 0},
    },
    "kaniko": {
        "params": [{"name": "image"}],
        "results": [{"name": "digest"}, {"name": "url"}],
        "image": "busybox",
        "env": [{"name": "IMAGE", "value": "$(params.image)"}],
        "script": (
            'printf "sha256:%s" "$(printf %s "$IMAGE" | tr / -)" > $(step.results.digest.path)\n'
            'printf "%s" "$IMAGE" > $(step.results.url.path)\n'
        ),
    },
    "mount": {
        "params": [{"name": "config"}],
        "volumeMounts": [{"name": "$(params.config)", "mountPath": "/config"}],
        "image": "busybox",
        "command": ["cat", "/config/x"],
    },
}


def actions(**extra: dict[str, Any]) -> dict[str, StepActionSpec]:
    return {
        name: StepActionSpec.model_validate(spec) for name, spec in {**ACTIONS, **extra}.items()
    }


def ref(name: str, step: str = "s", **fields: Any) -> dict[str, Any]:
    return {"name": step, "ref": {"name": name}, **fields}


def build(
    steps: list[dict[str, Any]],
    spec: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
    **ptask: Any,
) -> Plan:
    pipeline = PipelineSpec.model_validate(
        {
            "params": [{"name": p} for p in values or {}],
            "tasks": [{"name": "t", "taskSpec": {"steps": steps, **(spec or {})}, **ptask}],
        }
    )
    tasks = {p.name: p.taskSpec for p in pipeline.tasks if p.taskSpec is not None}
    return compile_pipeline(
        pipeline, tasks, values or {}, [], CTX, IMAGES, actions(**(extra or {}))
    )


def error(steps: list[dict[str, Any]], **kwargs: Any) -> CompileError:
    with pytest.raises(CompileError) as caught:
        build(steps, **kwargs)
    return caught.value


def test_a_step_runs_its_stepaction_with_the_steps_params_and_the_defaults() -> None:
    plan = build(
        [ref("echo", params=[{"name": "word", "value": "$(params.greeting)"}])],
        values={"greeting": "hello"},
    )
    container = containers(plan)["step-t-s"]
    assert container["image"] == "busybox"
    assert command(container) == ["echo", "hello!"]


def test_object_array_params_workingdir_and_the_stepactions_security_context() -> None:
    steps = [
        ref(
            "git",
            params=[
                {"name": "gitrepo", "value": {"url": "https://x/r.git", "commit": "abc"}},
                {"name": "flags", "value": ["-a", "-b"]},
            ],
            timeout="1m",
            onError="continue",
            securityContext={"runAsUser": 1000},
            computeResources={"requests": {"cpu": "100m"}},
        )
    ]
    container = containers(build(steps))["step-t-s"]
    assert command(container) == [
        "git-init",
        "-url=https://x/r.git",
        "-revision=abc",
        "-output=/workspace",
        "-a",
        "-b",
    ]
    assert container["workingDir"] == "/workspace"
    assert container["securityContext"] == {"runAsUser": 0}  # the StepAction's wins
    assert flag(container, "-timeout") == "1m"
    assert flag(container, "-on_error") == "continue"
    assert container["resources"]["requests"] == {"cpu": "100m"}


def test_an_unset_security_context_in_the_stepaction_drops_the_steps_as_tekton_does() -> None:
    steps = [ref("echo", params=[{"name": "word", "value": "x"}], securityContext={"a": 1})]
    assert "securityContext" not in containers(build(steps))["step-t-s"]


@pytest.mark.parametrize(
    ("field", "value", "label"),
    [
        ("image", "ubuntu", "image"),
        ("command", ["ls"], "command"),
        ("args", ["-l"], "args"),
        ("script", "echo", "script"),
        ("workingDir", "/w", "working dir"),
        ("env", [], "env"),
        ("volumeMounts", [{"name": "v", "mountPath": "/v"}], "volumeMounts"),
        ("results", [{"name": "r"}], "results"),
    ],
)
def test_a_step_with_ref_may_not_set_what_the_stepaction_provides(
    field: str, value: Any, label: str
) -> None:
    found = error([ref("echo", params=[{"name": "word", "value": "x"}], **{field: value})])
    assert found.field == f"tasks[t].steps[0].{field}"
    assert found.message == f"{label} cannot be used with Ref"


def test_params_on_a_step_without_ref_are_refused() -> None:
    found = error([{"image": "b", "command": ["true"], "params": [{"name": "p", "value": "v"}]}])
    assert (found.field, found.message) == (
        "tasks[t].steps[0].params",
        "params cannot be used without Ref",
    )


def test_a_missing_required_param_names_the_step_and_the_param() -> None:
    found = error([ref("echo", step="greet")])
    assert found.field == "tasks[t].steps[0].params"
    assert "step 'greet'" in found.message
    assert "'word'" in found.message
    assert "non-existent params in Step: [word]" in found.message


def test_an_extra_param_is_refused() -> None:
    found = error(
        [ref("echo", params=[{"name": "word", "value": "x"}, {"name": "nope", "value": "y"}])]
    )
    assert found.message == "extra params passed by Step to StepAction: [nope]"


def test_a_param_of_the_wrong_type_is_refused() -> None:
    found = error([ref("echo", params=[{"name": "word", "value": ["a"]}])])
    assert "invalid parameter substitution: word" in found.message


def test_a_default_may_reference_another_param() -> None:
    extra = {
        "d": {
            "params": [{"name": "a"}, {"name": "b", "default": "$(params.a)-b"}],
            "image": "busybox",
            "command": ["echo", "$(params.b)"],
        }
    }
    plan = build([ref("d", params=[{"name": "a", "value": "x"}])], extra=extra)
    assert command(containers(plan)["step-t-s"]) == ["echo", "x-b"]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"command": ["x"]}, "image", "missing field(s): Image"),
        (
            {"image": "b", "params": [{"name": "p"}], "script": "echo $(params.p)"},
            "script",
            "param substitution in scripts is not allowed.",
        ),
        (
            {"image": "b", "script": "x", "command": ["y"]},
            "script",
            "script cannot be used with command",
        ),
        (
            {"image": "b", "command": ["echo", "$(params.nope)"]},
            "command[1]",
            "non-existent variable",
        ),
        (
            {
                "image": "b",
                "command": ["x"],
                "params": [{"name": "p"}],
                "volumeMounts": [{"name": "$(params.p)-x", "mountPath": "/m"}],
            },
            "volumeMounts[0].name",
            "expect the Name to be a single param reference",
        ),
    ],
)
def test_a_stepaction_is_validated_as_tektons_webhook_does(
    spec: dict[str, Any], field: str, message: str
) -> None:
    params = [{"name": "p", "value": "v"}] if spec.get("params") else []
    found = error([ref("bad", params=params)], extra={"bad": spec})
    assert found.field == f"StepAction[bad].{field}"
    assert message in found.message


def test_a_volume_mount_is_named_by_a_param_and_binds_a_task_volume() -> None:
    plan = build(
        [ref("mount", params=[{"name": "config", "value": "cfg"}])],
        spec={"volumes": [{"name": "cfg", "configMap": {"name": "c"}}]},
    )
    mounts = containers(plan)["step-t-s"]["volumeMounts"]
    assert {"name": "cfg", "mountPath": "/config"} in mounts
    assert {"name": "cfg", "configMap": {"name": "c"}} in plan.pod_spec["volumes"]


def test_a_missing_stepaction_fails_naming_the_step() -> None:
    found = error([ref("nope")])
    assert (found.field, found.reason) == ("tasks[t].steps[0].ref", "StepActionNotFound")


def test_the_refs_of_a_task_once_each_local_by_name_remote_by_resolver_and_params() -> None:
    remote = {"resolver": "cluster", "params": [{"name": "name", "value": "x"}]}
    steps = [ref("a"), ref("b"), ref("a"), {"image": "x"}, {"ref": remote}, {"ref": remote}]
    refs = step_action_refs({"steps": steps})
    assert list(refs)[:2] == ["a", "b"]
    assert len(refs) == 3
    key = list(refs)[2]
    assert key.startswith("cluster:")
    assert key == ref_key(refs[key])


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"params": [{"name": "n", "value": "v"}]}, "steps[0].ref.resolver", "missing field(s)"),
        (
            {"name": "x", "resolver": "git", "params": []},
            "steps[0].ref",
            "expected exactly one, got both: name, params",
        ),
        ({"name": "git://x", "resolver": "git"}, "steps[0].ref.name", "concise resolver syntax"),
        (
            {"resolver": "git", "params": [{"name": "url", "value": "$(params.u)"}]},
            "steps[0].ref.params",
            "variables in resolver params are not supported",
        ),
    ],
)
def test_a_malformed_or_unserved_ref_is_refused(
    raw: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(CompileError) as caught:
        step_action_refs({"steps": [{"ref": raw}]})
    assert caught.value.field == field
    assert message in caught.value.message


def test_step_results_pass_into_a_later_stepactions_params() -> None:
    steps = [
        ref("kaniko", step="build", params=[{"name": "image", "value": "reg/app"}]),
        ref(
            "echo", step="show", params=[{"name": "word", "value": "$(steps.build.results.digest)"}]
        ),
    ]
    plan = build(steps)
    show = containers(plan)["step-t-show"]
    assert command(show) == ["echo", "$(steps.build.results.digest)!"]
    assert {
        "name": "tekton-internal-run",
        "mountPath": "/tekton/steps/step-build/results",
        "readOnly": True,
        "subPath": "t/0/status/results",
    } in show["volumeMounts"]


def test_the_subpaths_of_step_results_exist_before_any_step_starts() -> None:
    """The kubelet refuses a container whose subPath it cannot create because a running
    step is creating the same folders (CreateContainerConfigError): they are made first."""
    steps = [
        ref("kaniko", step="build", params=[{"name": "image", "value": "reg/app"}]),
        ref("echo", step="a", params=[{"name": "word", "value": "$(steps.build.results.url)"}]),
        ref("echo", step="b", params=[{"name": "word", "value": "$(steps.build.results.url)"}]),
    ]
    init = build(steps).pod_spec["initContainers"]
    subpaths = next(c for c in init if c["name"] == "pip-subpaths")
    assert subpaths["command"] == [
        "sh",
        "-c",
        "umask 0 && mkdir -p /pip/tekton-internal-run/t/0/status/results",
    ]
    assert subpaths["volumeMounts"] == [
        {"name": "tekton-internal-run", "mountPath": "/pip/tekton-internal-run"}
    ]
    plain = build([ref("echo", params=[{"name": "word", "value": "x"}])])
    assert "pip-subpaths" not in {c["name"] for c in plain.pod_spec["initContainers"]}


def test_the_same_stepaction_twice_keeps_its_results_apart() -> None:
    steps = [
        ref("kaniko", step="one", params=[{"name": "image", "value": "a"}]),
        ref("kaniko", step="two", params=[{"name": "image", "value": "b"}]),
    ]
    plan = build(steps)
    one, two = (containers(plan)[f"step-t-{n}"] for n in ("one", "two"))
    assert flag(one, "-step_metadata_dir") == "/tekton/run/t/0/status"
    assert flag(two, "-step_metadata_dir") == "/tekton/run/t/1/status"
    assert flag(one, "-step_results") == flag(two, "-step_results") == "digest,url"


def test_a_task_result_fetched_from_a_step_result_is_linked_into_the_task_results() -> None:
    plan = build(
        [ref("kaniko", step="build", params=[{"name": "image", "value": "reg/app"}])],
        spec={"results": [{"name": "digest", "value": "$(steps.build.results.digest)"}]},
    )
    link = next(c for c in plan.pod_spec["initContainers"] if c["name"] == "pip-link-results")
    assert link["command"][2] == (
        'ln -s "/tekton/run/t/0/status/results/digest" "/pip/pip-results-0/digest"'
    )
    assert flag(containers(plan)["step-t-build"], "-results") == "digest"
    assert plan.task("t").results == ("digest",)


def test_a_task_result_value_must_name_a_step_of_the_task() -> None:
    found = error(
        [ref("echo", params=[{"name": "word", "value": "x"}])],
        spec={"results": [{"name": "r", "value": "$(steps.other.results.x)"}]},
    )
    assert found.field == "tasks[t].results[r].value"


def test_a_steps_when_goes_to_its_entrypoint_only() -> None:
    steps = [
        ref("kaniko", step="build", params=[{"name": "image", "value": "$(params.img)"}]),
        ref(
            "echo",
            step="maybe",
            params=[{"name": "word", "value": "x"}],
            when=[
                {"input": "$(params.img)", "operator": "in", "values": ["reg/app"]},
                {"input": "$(steps.build.results.url)", "operator": "notin", "values": ["x"]},
                {"cel": "'$(params.img)' != ''"},
            ],
        ),
    ]
    plan = build(steps, values={"img": "reg/app"})
    build_step, maybe = containers(plan)["step-t-build"], containers(plan)["step-t-maybe"]
    assert flag(build_step, "-when_expressions") is None
    assert json.loads(flag(maybe, "-when_expressions") or "") == [
        {"input": "reg/app", "operator": "in", "values": ["reg/app"]},
        {"input": "$(steps.build.results.url)", "operator": "notin", "values": ["x"]},
        {"cel": "'reg/app' != ''"},
    ]
    assert any(m["mountPath"] == "/tekton/steps/step-build/results" for m in maybe["volumeMounts"])
    assert [s.when for s in plan.task("t").steps] == [False, True]


def test_a_first_steps_when_in_a_task_with_a_when_decided_in_the_pod_is_refused() -> None:
    pipeline = PipelineSpec.model_validate(
        {
            "tasks": [
                {
                    "name": "a",
                    "taskSpec": {
                        "results": [{"name": "r"}],
                        "steps": [{"image": "b", "script": "x"}],
                    },
                },
                {
                    "name": "t",
                    "when": [{"input": "$(tasks.a.results.r)", "operator": "in", "values": ["y"]}],
                    "taskSpec": {
                        "steps": [{"image": "b", "command": ["true"], "when": [{"cel": "1 == 1"}]}]
                    },
                },
            ]
        }
    )
    tasks = {p.name: p.taskSpec for p in pipeline.tasks if p.taskSpec is not None}
    with pytest.raises(CompileError) as caught:
        compile_pipeline(pipeline, tasks, {}, [], CTX, IMAGES)
    assert caught.value.field == "tasks[t].steps[0].when"


# -- run for real under Tekton's entrypoint (local Pods: root) ------------------------

local = pytest.mark.skipif(usable() is not None, reason=str(usable()))


@local
def test_stepactions_run_under_tektons_entrypoint(tmp_path: Path) -> None:
    """The kaniko-style digest fetched as a task result and used by a later task; the same
    StepAction twice; a step skipped by its when (Skipped, exit 0), one run by CEL."""
    build_task = {
        "name": "build",
        "params": [{"name": "img", "value": "$(params.img)"}],
        "taskSpec": {
            "params": [{"name": "img"}],
            "results": [
                {"name": "digest", "value": "$(steps.kaniko.results.digest)"},
                {"name": "both"},
            ],
            "steps": [
                ref("kaniko", step="kaniko", params=[{"name": "image", "value": "$(params.img)"}]),
                ref("kaniko", step="again", params=[{"name": "image", "value": "other/x"}]),
                ref(
                    "echo",
                    step="skipped",
                    params=[{"name": "word", "value": "no"}],
                    when=[
                        {
                            "input": "$(steps.kaniko.results.url)",
                            "operator": "notin",
                            "values": ["reg/app"],
                        }
                    ],
                ),
                {
                    "name": "join",
                    "image": "busybox",
                    "command": [
                        "sh",
                        "-c",
                        'printf "%s|%s" "$1" "$2" > $(results.both.path)',
                        "--",
                    ],
                    "args": ["$(steps.kaniko.results.digest)", "$(steps.again.results.digest)"],
                    "when": [{"cel": "'$(steps.again.results.url)' == 'other/x'"}],
                },
            ],
        },
    }
    use = {
        "name": "use",
        "params": [{"name": "d", "value": "$(tasks.build.results.digest)"}],
        "taskSpec": {
            "params": [{"name": "d"}],
            "results": [{"name": "out"}],
            "steps": [
                {"image": "busybox", "script": 'printf "got-$(params.d)" > $(results.out.path)'}
            ],
        },
    }
    pipeline = PipelineSpec.model_validate(
        {
            "params": [{"name": "img", "default": "reg/app"}],
            "tasks": [build_task, use],
            "results": [
                {"name": "digest", "value": "$(tasks.build.results.digest)"},
                {"name": "both", "value": "$(tasks.build.results.both)"},
                {"name": "out", "value": "$(tasks.use.results.out)"},
            ],
        }
    )
    tasks = {p.name: p.taskSpec for p in pipeline.tasks if p.taskSpec is not None}
    plan = compile_pipeline(pipeline, tasks, {}, [], CTX, IMAGES, actions())
    view = read_pod(plan, pod(plan.pod_spec, run_pod(plan.pod_spec, tmp_path)))
    assert view.verdict is not None
    assert view.verdict.results == {
        "digest": "sha256:reg-app",
        "both": "sha256:reg-app|sha256:other-x",
        "out": "got-sha256:reg-app",
    }, view.tasks
    build = next(t for t in view.tasks if t["name"] == "build")
    assert build["state"] == "succeeded"
    assert [(s["name"], s["exitCode"], s["reason"]) for s in build["steps"]] == [
        ("kaniko", 0, ""),
        ("again", 0, ""),
        ("skipped", 0, "Skipped"),
        ("join", 0, ""),
    ]


@local
def test_a_task_whose_only_step_is_skipped_by_its_when_succeeds(tmp_path: Path) -> None:
    pipeline = PipelineSpec.model_validate(
        {
            "tasks": [
                {
                    "name": "t",
                    "taskSpec": {
                        "steps": [
                            ref(
                                "echo",
                                params=[{"name": "word", "value": "x"}],
                                when=[{"input": "a", "operator": "in", "values": ["b"]}],
                            )
                        ]
                    },
                }
            ]
        }
    )
    tasks = {p.name: p.taskSpec for p in pipeline.tasks if p.taskSpec is not None}
    plan = compile_pipeline(pipeline, tasks, {}, [], CTX, IMAGES, actions())
    view = read_pod(plan, pod(plan.pod_spec, run_pod(plan.pod_spec, tmp_path)))
    assert view.verdict is not None
    assert view.verdict.succeeded
    assert view.tasks[0]["state"] == "succeeded"
    assert view.tasks[0]["steps"][0]["reason"] == "Skipped"


@local
def test_the_readmes_stepaction_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "examples/pipeline_in_pod/README.md").read_text()
    section = readme.split("## StepActions", 1)[1]
    docs = list(yaml.safe_load_all(section.split("```yaml\n", 1)[1].split("```", 1)[0]))
    action, run = docs
    spec = run["spec"]["customSpec"]["spec"]["pipelineSpec"]
    pipeline = PipelineSpec.model_validate(spec)
    tasks = {p.name: p.taskSpec for p in pipeline.tasks if p.taskSpec is not None}
    found = {action["metadata"]["name"]: StepActionSpec.model_validate(action["spec"])}
    plan = compile_pipeline(pipeline, tasks, {}, [], CTX, IMAGES, found)
    view = read_pod(plan, pod(plan.pod_spec, run_pod(plan.pod_spec, tmp_path)))
    assert view.verdict is not None
    assert view.verdict.results == {"digest": "sha256:reg-app"}, view.tasks
    assert "deploying sha256:reg-app" in log(tmp_path, "step-deploy-unnamed-0")


def test_compile_reads_the_stepactions_of_the_file(tmp_path: Path) -> None:
    docs = [
        {
            "apiVersion": "tekton.dev/v1beta1",
            "kind": "StepAction",
            "metadata": {"name": "echo"},
            "spec": ACTIONS["echo"],
        },
        {
            "apiVersion": "tekton.dev/v1",
            "kind": "Pipeline",
            "metadata": {"name": "p"},
            "spec": {
                "tasks": [
                    {
                        "name": "t",
                        "taskSpec": {
                            "steps": [ref("echo", params=[{"name": "word", "value": "hi"}])]
                        },
                    }
                ]
            },
        },
    ]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    pod_spec = compile_file(path, {})
    (step,) = [c for c in pod_spec["containers"] if c["name"] == "step-t-s"]
    assert step["args"][-2:] == ["--", "hi!"]
