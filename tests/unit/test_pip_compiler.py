"""The Pipeline-in-Pod compiler: DAG, substitution, results, workspaces, finally, the Pod."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from examples.pipeline_in_pod.compiler import (
    BARRIER_CONTAINER,
    SCHEDULER_CONTAINER,
    CompileError,
    Images,
    Plan,
    RunContext,
    barrier_script,
    compile_pipeline,
    quantity,
    scheduler_script,
)
from examples.pipeline_in_pod.dag import order
from examples.pipeline_in_pod.matrix import join_script
from examples.pipeline_in_pod.model import PipelineSpec, TaskSpec, WorkspaceBinding
from examples.pipeline_in_pod.nested import end_script

IMAGES = Images(entrypoint="ep:1", nop="nop:1", shell="shell:1")
CTX = RunContext(name="run", namespace="ns", uid="uid-1", pipeline="pl", pipeline_run="pr")


def step(*command: str, **fields: Any) -> dict[str, Any]:
    return {"image": "busybox", "command": list(command), **fields}


def task(name: str, *steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    spec = {"steps": list(steps) or [step("true")]}
    spec.update(fields.pop("spec", {}))
    return {"name": name, "taskSpec": spec, **fields}


def build(
    tasks: list[dict[str, Any]],
    values: dict[str, Any] | None = None,
    bindings: list[dict[str, Any]] | None = None,
    ctx: RunContext = CTX,
    finally_: list[dict[str, Any]] | None = None,
    **pipeline: Any,
) -> Plan:
    spec = PipelineSpec.model_validate({"tasks": tasks, "finally": finally_ or [], **pipeline})
    specs = {t.name: t.taskSpec for t in [*spec.tasks, *spec.finally_]}
    resolved = {name: s for name, s in specs.items() if s is not None}
    binds = [WorkspaceBinding.model_validate(b) for b in bindings or []]
    return compile_pipeline(spec, resolved, values or {}, binds, ctx, IMAGES)


def containers(plan: Plan) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in plan.pod_spec["containers"]}


def flag(container: dict[str, Any], name: str) -> str | None:
    args = container["args"]
    return args[args.index(name) + 1] if name in args else None


def waited(container: dict[str, Any]) -> str | None:
    """The ``-wait_file`` list without the scheduler's gate (tested on its own)."""
    files = (flag(container, "-wait_file") or "").split(",")
    kept = [f for f in files if f and not f.startswith("/tekton/run/pip-gate/")]
    return ",".join(kept) or None


def command(container: dict[str, Any]) -> list[str]:
    """What the entrypoint runs: after ``-entrypoint``, without the ``--``."""
    args = container["args"]
    at = args.index("-entrypoint")
    return [args[at + 1], *args[at + 3 :]]


def scripts(plan: Plan) -> dict[str, str]:
    """Each placed script, decoded, by path."""
    init = {c["name"]: c for c in plan.pod_spec["initContainers"]}
    text = init["place-scripts"]["args"][1]
    found = re.findall(r'scriptfile="([^"]+)"\n.*?<< \'_EOF_\'\n(.*?)\n_EOF_', text, re.S)
    return {path: base64.b64decode(body).decode() for path, body in found}


# -- order --------------------------------------------------------------------------


def test_sequential_tasks_wait_on_the_previous_tasks_last_step() -> None:
    plan = build(
        [
            task("a", step("echo", "1"), step("echo", "2")),
            task("b", runAfter=["a"]),
        ]
    )
    c = containers(plan)
    assert waited(c["step-a-unnamed-0"]) is None
    assert waited(c["step-a-unnamed-1"]) == "/tekton/run/a/0/out"
    assert waited(c["step-b-unnamed-0"]) == "/tekton/run/a/1/out"
    assert flag(c["step-a-unnamed-1"], "-post_file") == "/tekton/run/a/1/out"


def test_fan_out_branches_wait_only_on_their_own_predecessors_and_fan_in_waits_on_all() -> None:
    plan = build(
        [
            task("a"),
            task("b", runAfter=["a"]),
            task("c", runAfter=["a"]),
            task("d", runAfter=["b", "c"]),
            task("e"),
        ]
    )
    c = containers(plan)
    assert waited(c["step-b-unnamed-0"]) == "/tekton/run/a/0/out"
    assert waited(c["step-c-unnamed-0"]) == "/tekton/run/a/0/out"
    assert waited(c["step-d-unnamed-0"]) == "/tekton/run/b/0/out,/tekton/run/c/0/out"
    assert waited(c["step-e-unnamed-0"]) is None  # a parallel root
    assert [t.name for t in plan.tasks] == ["a", "e", "b", "c", "d"]


def test_a_result_reference_implies_order() -> None:
    plan = build(
        [
            task("b", params=[{"name": "v", "value": "$(tasks.a.results.x)"}]),
            task("a", spec={"results": [{"name": "x"}]}),
        ]
    )
    assert plan.task("b").deps == ("a",)
    assert waited(containers(plan)["step-b-unnamed-0"]) == "/tekton/run/a/0/out"


@pytest.mark.parametrize(
    ("tasks", "field", "words"),
    [
        ([task("a", runAfter=["b"]), task("b", runAfter=["a"])], "tasks", "cycle"),
        ([task("a", runAfter=["a"])], "tasks[a]", "itself"),
        ([task("a", runAfter=["nope"])], "tasks[a]", "'nope'"),
        (
            [task("a", params=[{"name": "p", "value": "$(tasks.zz.results.x)"}])],
            "tasks[a]",
            "tasks.zz",
        ),
        ([task("a"), task("a")], "tasks[a]", "two pipeline tasks"),
    ],
)
def test_bad_order_is_rejected_naming_the_field(
    tasks: list[dict[str, Any]], field: str, words: str
) -> None:
    with pytest.raises(CompileError) as caught:
        build(tasks)
    assert caught.value.field == field
    assert words in caught.value.message


def test_order_is_stable_and_topological() -> None:
    assert order({"c": ["a"], "a": [], "b": ["a"], "d": ["c", "b"]}) == ["a", "c", "b", "d"]


# -- params -------------------------------------------------------------------------


def test_params_string_array_object_with_defaults_and_substitution() -> None:
    plan = build(
        [
            task(
                "t",
                step(
                    "echo",
                    "$(params.s)",
                    "$(params.arr[*])",
                    "$(params.arr[1])",
                    "$(params.obj.k)",
                    "$(params['s'])",
                    "x-$(params.arr[*])",
                ),
                params=[
                    {"name": "s", "value": "$(params.word)"},
                    {"name": "arr", "value": ["$(params.list[*])"]},
                    {"name": "obj", "value": "$(params.map[*])"},
                ],
                spec={
                    "params": [
                        {"name": "s"},
                        {"name": "arr", "type": "array"},
                        {"name": "obj", "type": "object", "properties": {"k": {}, "j": {}}},
                    ]
                },
            )
        ],
        values={"list": ["p", "q"]},
        params=[
            {"name": "word", "default": "hello"},
            {"name": "list", "type": "array"},
            {"name": "map", "type": "object", "default": {"k": "K", "j": "J"}},
        ],
    )
    assert command(containers(plan)["step-t-unnamed-0"]) == [
        "echo",
        "hello",
        "p",
        "q",
        "q",
        "K",
        "hello",
        "x-p q",
    ]


def test_object_param_given_in_part_takes_missing_keys_from_its_default() -> None:
    plan = build(
        [task("t", step("echo", "$(params.o.a)", "$(params.o.b)"))],
        values={"o": {"a": "given"}},
        params=[{"name": "o", "type": "object", "default": {"a": "1", "b": "2"}}],
    )
    assert command(containers(plan)["step-t-unnamed-0"]) == ["echo", "given", "2"]


@pytest.mark.parametrize(
    ("declared", "given", "words"),
    [
        ([{"name": "p"}], {}, "no value and no default"),
        ([{"name": "p", "type": "array"}], {"p": "one"}, "is a array, but a string"),
        ([{"name": "p", "enum": ["a", "b"]}], {"p": "c"}, "must be one of"),
    ],
)
def test_bad_params_are_rejected(
    declared: list[dict[str, Any]], given: dict[str, Any], words: str
) -> None:
    with pytest.raises(CompileError) as caught:
        build([task("t")], values=given, params=declared)
    assert caught.value.field == "params"
    assert words in caught.value.message


def test_context_variables() -> None:
    plan = build(
        [
            task(
                "t",
                step(
                    "echo",
                    "$(context.pipelineRun.name)",
                    "$(context.pipelineRun.namespace)",
                    "$(context.pipeline.name)",
                    "$(context.taskRun.name)",
                    "$(context.pipelineTask.retries)",
                    "$(context.pipelineRun.uid)",
                ),
            )
        ]
    )
    assert command(containers(plan)["step-t-unnamed-0"])[1:] == [
        "pr",
        "ns",
        "pl",
        "pr-t",
        "0",
        "uid-1",
    ]


def test_pipeline_params_propagate_into_inline_task_specs_only() -> None:
    pipeline = PipelineSpec.model_validate(
        {
            "params": [{"name": "p", "default": "v"}],
            "tasks": [
                task("inline", step("echo", "$(params.p)")),
                {"name": "ref", "taskRef": {"name": "t"}},
            ],
        }
    )
    ref = TaskSpec.model_validate({"steps": [step("echo", "$(params.p)")]})
    specs = {"inline": pipeline.tasks[0].taskSpec, "ref": ref}
    assert specs["inline"] is not None
    plan = compile_pipeline(
        pipeline, {k: v for k, v in specs.items() if v is not None}, {}, [], CTX, IMAGES
    )
    c = containers(plan)
    assert command(c["step-inline-unnamed-0"]) == ["echo", "v"]
    assert command(c["step-ref-unnamed-0"]) == ["echo", "$(params.p)"]  # not declared there


# -- results ------------------------------------------------------------------------


def test_results_are_kept_apart_per_task_and_read_at_run_time_by_the_entrypoint() -> None:
    plan = build(
        [
            task(
                "a",
                step("sh", "-c", "echo -n 1 > $(results.x.path)"),
                step("true"),
                spec={"results": [{"name": "x"}, {"name": "y", "type": "array"}]},
            ),
            task(
                "b",
                step(
                    "echo",
                    "$(params.v)",
                    "$(tasks.a.results.y[*])",
                    env=[{"name": "E", "value": "got $(tasks.a.results.x)"}],
                ),
                params=[{"name": "v", "value": "$(tasks.a.results.x)"}],
                spec={"params": [{"name": "v"}], "results": [{"name": "x"}]},
            ),
        ]
    )
    c = containers(plan)
    first, last, consumer = c["step-a-unnamed-0"], c["step-a-unnamed-1"], c["step-b-unnamed-0"]
    assert command(first) == ["sh", "-c", "echo -n 1 > /tekton/results/x"]
    assert flag(first, "-results") is None  # read once, by the task's last step
    assert flag(last, "-results") == "x,y"
    assert command(consumer) == ["echo", "$(steps.pip-a.results.x)", "$(steps.pip-a.results.y[*])"]
    assert consumer["env"] == [{"name": "E", "value": "got $(steps.pip-a.results.x)"}]
    own = {m["mountPath"]: m for m in consumer["volumeMounts"]}
    assert (
        own["/tekton/results"]["name"]
        != {m["mountPath"]: m for m in first["volumeMounts"]}["/tekton/results"]["name"]
    )
    producer = own["/tekton/steps/step-pip-a/results"]
    assert producer["readOnly"] is True
    assert (
        producer["name"]
        == {m["mountPath"]: m for m in first["volumeMounts"]}["/tekton/results"]["name"]
    )


def test_a_result_in_a_shell_script_becomes_an_env_var_the_entrypoint_fills() -> None:
    plan = build(
        [
            task("a", spec={"results": [{"name": "x"}]}),
            task("b", {"image": "busybox", "script": "echo '$(tasks.a.results.x)' done"}),
        ]
    )
    consumer = containers(plan)["step-b-unnamed-0"]
    assert consumer["env"] == [{"name": "PIP_REF_0", "value": "$(steps.pip-a.results.x)"}]
    placed = scripts(plan)["/tekton/scripts/step-b-unnamed-0"]
    assert placed == "#!/bin/sh\nset -e\necho '${PIP_REF_0}' done"
    assert command(consumer) == ["/tekton/scripts/step-b-unnamed-0"]


def test_a_result_in_a_non_shell_script_is_rejected() -> None:
    with pytest.raises(CompileError) as caught:
        build(
            [
                task("a", spec={"results": [{"name": "x"}]}),
                task(
                    "b",
                    {
                        "image": "python",
                        "script": "#!/usr/bin/env python3\nprint('$(tasks.a.results.x)')",
                    },
                ),
            ]
        )
    assert caught.value.field == "tasks[b].steps[0].script"


def test_pipeline_results_keep_their_task_references_for_the_controller() -> None:
    plan = build(
        [task("a", spec={"results": [{"name": "x"}]})],
        results=[{"name": "out", "value": "got $(tasks.a.results.x)"}],
    )
    assert plan.results == {"out": "got $(tasks.a.results.x)"}


# -- scripts, step template, flags --------------------------------------------------


def test_scripts_are_placed_base64_with_tektons_default_shebang() -> None:
    plan = build(
        [
            task(
                "t",
                {"image": "bash", "script": "#!/bin/bash\necho $(params.p)"},
                {"image": "busybox", "script": "echo plain"},
                params=[{"name": "p", "value": "v"}],
                spec={"params": [{"name": "p"}]},
            )
        ]
    )
    placed = scripts(plan)
    assert placed["/tekton/scripts/step-t-unnamed-0"] == "#!/bin/bash\necho v"
    assert placed["/tekton/scripts/step-t-unnamed-1"] == "#!/bin/sh\nset -e\necho plain"
    init = plan.pod_spec["initContainers"]
    assert [c["name"] for c in init] == ["prepare", "place-scripts"]
    assert init[0]["image"] == "ep:1"
    assert init[1]["image"] == "shell:1"


def test_step_template_env_workdir_timeout_and_on_error() -> None:
    plan = build(
        [
            task(
                "t",
                {
                    "name": "s",
                    "command": ["run"],
                    "env": [{"name": "B", "value": "own"}],
                    "timeout": "5s",
                    "onError": "continue",
                },
                spec={
                    "stepTemplate": {
                        "image": "tmpl",
                        "workingDir": "/w",
                        "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "tmpl"}],
                    }
                },
            )
        ]
    )
    c = containers(plan)["step-t-s"]
    assert c["image"] == "tmpl"
    assert c["workingDir"] == "/w"
    assert c["env"] == [{"name": "A", "value": "a"}, {"name": "B", "value": "own"}]
    assert flag(c, "-timeout") == "5s"
    assert flag(c, "-on_error") == "continue"
    assert c["terminationMessagePath"] == "/tekton/termination"


def test_a_single_step_tasks_timeout_is_its_steps() -> None:
    plan = build([task("t", timeout="30s")])
    assert flag(containers(plan)["step-t-unnamed-0"], "-timeout") == "30s"


# -- workspaces ---------------------------------------------------------------------


def test_workspaces_are_a_shared_empty_dir_mounted_only_where_declared() -> None:
    plan = build(
        [
            task(
                "w",
                spec={"workspaces": [{"name": "out"}]},
                workspaces=[{"name": "out", "workspace": "src"}],
            ),
            task(
                "r",
                step("cat", "$(workspaces.in.path)/f", "$(workspaces.in.bound)"),
                spec={"workspaces": [{"name": "in", "mountPath": "/in", "readOnly": True}]},
                workspaces=[{"name": "in", "workspace": "src", "subPath": "sub"}],
            ),
            task("other"),
        ],
        workspaces=[{"name": "src"}],
    )
    c = containers(plan)
    volumes = {v["name"]: v for v in plan.pod_spec["volumes"]}
    assert volumes["ws-src"] == {"name": "ws-src", "emptyDir": {}}
    writer = [m for m in c["step-w-unnamed-0"]["volumeMounts"] if m["name"] == "ws-src"]
    reader = [m for m in c["step-r-unnamed-0"]["volumeMounts"] if m["name"] == "ws-src"]
    assert writer == [{"name": "ws-src", "mountPath": "/workspace/out"}]
    assert reader == [{"name": "ws-src", "mountPath": "/in", "readOnly": True, "subPath": "sub"}]
    assert not [m for m in c["step-other-unnamed-0"]["volumeMounts"] if m["name"] == "ws-src"]
    assert command(c["step-r-unnamed-0"]) == ["cat", "/in/f", "true"]


def test_workspaces_bound_by_the_run_to_a_pvc_with_sub_path() -> None:
    plan = build(
        [
            task(
                "t",
                step("echo", "$(workspaces.d.claim)"),
                spec={"workspaces": [{"name": "d"}]},
                workspaces=[{"name": "d", "workspace": "data", "subPath": "x"}],
            )
        ],
        bindings=[{"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}, "subPath": "r"}],
        workspaces=[{"name": "data"}],
    )
    volumes = {v["name"]: v for v in plan.pod_spec["volumes"]}
    assert volumes["ws-data"]["persistentVolumeClaim"] == {"claimName": "pvc"}
    c = containers(plan)["step-t-unnamed-0"]
    assert next(m for m in c["volumeMounts"] if m["name"] == "ws-data")["subPath"] == "r/x"
    assert command(c) == ["echo", "pvc"]


def test_optional_unbound_workspace_is_unbound_and_a_required_one_is_rejected() -> None:
    plan = build(
        [
            task(
                "t",
                step("echo", "$(workspaces.o.bound)"),
                spec={"workspaces": [{"name": "o", "optional": True}]},
            )
        ]
    )
    assert command(containers(plan)["step-t-unnamed-0"]) == ["echo", "false"]
    with pytest.raises(CompileError) as caught:
        build([task("t", spec={"workspaces": [{"name": "w"}]})])
    assert caught.value.field == "tasks[t].workspaces[w]"
    with pytest.raises(CompileError) as caught:
        build([task("t")], bindings=[{"name": "nope", "emptyDir": {}}])
    assert caught.value.field == "workspaces[nope]"


# -- when ---------------------------------------------------------------------------


def test_when_false_on_params_skips_the_task_before_the_pod_and_its_result_users() -> None:
    plan = build(
        [
            task(
                "a",
                when=[{"input": "$(params.go)", "operator": "in", "values": ["yes"]}],
                spec={"results": [{"name": "x"}]},
            ),
            task("b", runAfter=["a"]),
            task("c", params=[{"name": "v", "value": "$(tasks.a.results.x)"}]),
            task("d", when=[{"input": "$(params.go)", "operator": "notin", "values": ["yes"]}]),
        ],
        values={"go": "no"},
        params=[{"name": "go"}],
    )
    assert plan.task("a").skipped == "WhenExpressionsEvaluatedFalse"
    assert plan.task("c").skipped == "ResultsMissing"
    assert plan.task("b").skipped is None
    assert plan.task("d").skipped is None
    c = containers(plan)
    assert set(c) == {"step-b-unnamed-0", "step-d-unnamed-0"}
    assert waited(c["step-b-unnamed-0"]) is None  # runAfter a skipped task: runs


def test_when_on_a_result_is_decided_in_the_pod_by_the_entrypoint() -> None:
    plan = build(
        [
            task("a", spec={"results": [{"name": "x"}]}),
            task(
                "b",
                step("echo", "1"),
                step("echo", "2"),
                when=[{"input": "$(tasks.a.results.x)", "operator": "in", "values": ["go"]}],
            ),
        ]
    )
    c = containers(plan)
    for name in ("step-b-unnamed-0", "step-b-unnamed-1"):
        assert json.loads(flag(c[name], "-when_expressions") or "") == [
            {"input": "$(steps.pip-a.results.x)", "operator": "in", "values": ["go"]}
        ]
        assert "/tekton/steps/step-pip-a/results" in [
            m["mountPath"] for m in c[name]["volumeMounts"]
        ]
    assert plan.task("b").deps == ("a",)


# -- finally ------------------------------------------------------------------------


def test_finally_waits_on_a_barrier_that_waits_on_every_task_and_reads_statuses() -> None:
    plan = build(
        [task("a"), task("b", runAfter=["a"])],
        finally_=[task("f", step("echo", "$(tasks.status)", "$(tasks.a.status)"))],
    )
    c = containers(plan)
    names = [x["name"] for x in plan.pod_spec["containers"]]
    assert names == [
        "step-a-unnamed-0",
        "step-b-unnamed-0",
        SCHEDULER_CONTAINER,
        BARRIER_CONTAINER,
        "step-f-unnamed-0",
    ]
    final = c["step-f-unnamed-0"]
    assert waited(final) == f"/tekton/run/{BARRIER_CONTAINER}/f"
    assert command(final) == [
        "echo",
        "$(steps.pip-status.results.aggregate)",
        "$(steps.pip-status.results.task-a)",
    ]
    assert "/tekton/steps/step-pip-status/results" in [
        m["mountPath"] for m in final["volumeMounts"]
    ]
    assert c[BARRIER_CONTAINER]["image"] == "shell:1"
    assert plan.task("f").is_finally


@pytest.mark.parametrize(
    ("ended", "expected"),
    [
        (
            {"a": "out", "b": "out", "c": "out"},
            ("Succeeded", "Succeeded", "Succeeded", "Succeeded"),
        ),
        ({"a": "out.err", "b": "out.err", "c": "out"}, ("Failed", "Failed", "None", "Succeeded")),
        ({"a": "out", "b": "out.err", "c": "out"}, ("Failed", "Succeeded", "Failed", "Succeeded")),
    ],
)
def test_the_barrier_script_computes_tekton_statuses(
    tmp_path: Path, ended: dict[str, str], expected: tuple[str, ...]
) -> None:
    """a -> b, and c alone; ``skip`` was skipped before the Pod ran (None). Finally task
    ``uses_b`` reads b's results: it runs only if b succeeded; ``plain`` always runs."""
    deps = {"a": [], "b": ["a"], "c": [], "skip": []}
    posts = {name: f"{tmp_path}/run/{name}/out" for name in ("a", "b", "c")}
    for name, file in ended.items():
        Path(posts[name]).parent.mkdir(parents=True)
        Path(posts[name]).with_name(file).touch()
    script = barrier_script(deps, posts, {"skip"}, finals={"uses_b": ["b"], "plain": []})
    script = script.replace("/pip/status", f"{tmp_path}/status").replace(
        "/tekton/run", f"{tmp_path}/run"
    )
    (tmp_path / "status").mkdir()
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    read = {p.name: p.read_text() for p in (tmp_path / "status").iterdir()}
    aggregate, a, b, c = expected
    # A skipped task makes an all-succeeded pipeline "Completed", as in Tekton.
    aggregate = "Completed" if aggregate == "Succeeded" else aggregate
    assert read == {
        "aggregate": aggregate,
        "task-a": a,
        "task-b": b,
        "task-c": c,
        "task-skip": "None",
    }
    gates = sorted(p.name for p in (tmp_path / "run" / BARRIER_CONTAINER).iterdir())
    assert gates == ["plain", "uses_b" if b == "Succeeded" else "uses_b.err"]


# -- sidecars, resources, the Pod ---------------------------------------------------


def test_sidecars_run_beside_and_root_steps_wait_for_the_ready_annotation() -> None:
    plan = build(
        [
            task(
                "t",
                spec={
                    "sidecars": [
                        {
                            "name": "db",
                            "image": "redis",
                            "readinessProbe": {"exec": {"command": ["true"]}},
                        }
                    ]
                },
            ),
            task("u", runAfter=["t"]),
        ]
    )
    c = containers(plan)
    assert c["sidecar-t-db"]["image"] == "redis"
    assert c["sidecar-t-db"]["readinessProbe"] == {"exec": {"command": ["true"]}}
    assert "command" not in c["sidecar-t-db"]
    assert plan.waits_for_ready
    root = c["step-t-unnamed-0"]
    assert waited(root) == "/tekton/downward/ready"
    assert "-wait_file_content" in root["args"]
    assert waited(c["step-u-unnamed-0"]) == "/tekton/run/t/0/out"
    assert plan.task("t").sidecars == ("sidecar-t-db",)
    volumes = {v["name"] for v in plan.pod_spec["volumes"]}
    assert "tekton-internal-downward" in volumes


def test_requests_are_sized_for_what_runs_at_once() -> None:
    def sized(cpu: str, memory: str) -> dict[str, Any]:
        return step("x", resources={"requests": {"cpu": cpu, "memory": memory}})

    plan = build(
        [
            task("a", sized("1", "1Gi"), sized("500m", "2Gi")),  # sequential: max
            task("b", sized("250m", "1Gi")),  # parallel with a: adds up
            task("c", sized("2", "100Mi"), runAfter=["a", "b"]),  # after both: its own level
        ]
    )
    everything = [c for c in plan.pod_spec["containers"] if c["name"].startswith("step-")]
    requests = [c["resources"]["requests"] for c in everything]
    assert requests[0] == {"cpu": "2000m", "memory": str(3 * 2**30)}
    assert all(r == {"cpu": "0", "memory": "0"} for r in requests[1:])
    assert quantity("1.5Gi") == 1.5 * 2**30


def test_requests_never_exceed_a_steps_limit() -> None:
    capped = step("x", resources={"requests": {"cpu": "1"}, "limits": {"cpu": "500m"}})
    plan = build([task("a", capped), task("b", step("y", resources={"requests": {"cpu": "1"}}))])
    requests = [c["resources"]["requests"]["cpu"] for c in plan.pod_spec["containers"][:2]]
    assert requests == ["500m", "1500m"]


def test_pod_takes_the_service_account_and_pod_template() -> None:
    ctx = RunContext(
        name="r",
        namespace="ns",
        uid="u",
        pipeline="p",
        pipeline_run="pr",
        service_account="builder",
        pod_template={
            "nodeSelector": {"a": "b"},
            "tolerations": [{"key": "k"}],
            "imagePullSecrets": [{"name": "s"}],
        },
    )
    spec = build([task("t")], ctx=ctx).pod_spec
    assert spec["serviceAccountName"] == "builder"
    assert spec["nodeSelector"] == {"a": "b"}
    assert spec["imagePullSecrets"] == [{"name": "s"}]
    assert spec["restartPolicy"] == "Never"


def test_container_names_are_unique_and_short() -> None:
    long = "x" * 60
    plan = build([task("t", {"name": long, **step("a")}, {"name": long + "y", **step("b")})])
    names = [c["name"] for c in plan.pod_spec["containers"]]
    assert len(set(names)) == 2
    assert all(len(n) <= 63 for n in names)


# -- what one Pod cannot do ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "field"),
    [
        ([task("t", retries=2)], "tasks[t].retries"),
        (
            [
                task("a"),
                task("t", matrix={"params": [{"name": "p", "value": "$(tasks.a.results.x)"}]}),
            ],
            "tasks[t].matrix",
        ),
        ([task("t", step("a"), step("b"), timeout="1m")], "tasks[t].timeout"),
        ([task("t", {"image": "busybox"})], "tasks[t].steps[0]"),
    ],
)
def test_what_one_pod_cannot_do_is_rejected_naming_the_field(
    tasks: list[dict[str, Any]], field: str
) -> None:
    with pytest.raises(CompileError) as caught:
        build(tasks)
    assert caught.value.field == field


def test_a_matrix_from_results_says_why_it_is_impossible() -> None:
    with pytest.raises(CompileError, match="impossible in one Pod"):
        build(
            [
                task("a"),
                task("t", matrix={"params": [{"name": "p", "value": "$(tasks.a.results.x)"}]}),
            ]
        )


def test_compiling_is_deterministic() -> None:
    tasks = [task("a", {"image": "b", "script": "echo"}), task("b", runAfter=["a"])]
    assert build(tasks).pod_spec == build(tasks).pod_spec


def test_tasks_after_the_first_wait_on_a_gate_the_scheduler_opens() -> None:
    plan = build([task("a"), task("b", runAfter=["a"]), task("c")])
    c = containers(plan)
    assert flag(c["step-b-unnamed-0"], "-wait_file") == "/tekton/run/a/0/out,/tekton/run/pip-gate/b"
    assert flag(c["step-c-unnamed-0"], "-wait_file") is None  # a root starts at once
    assert c[SCHEDULER_CONTAINER]["image"] == "shell:1"
    assert SCHEDULER_CONTAINER not in containers(build([task("a"), task("c")]))


@pytest.mark.parametrize(
    ("ended", "gate"),
    [({"a/0/out": "", "x/0/out": ""}, "b"), ({"a/0/out": "", "x/0/out.err": ""}, "b.err")],
)
def test_the_scheduler_opens_a_gate_once_the_deps_end_and_stops_after_a_failure(
    tmp_path: Path, ended: dict[str, str], gate: str
) -> None:
    """b waits on a; x (failed or not) is elsewhere in the pipeline."""
    for path in ended:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    script = scheduler_script({"b": ["/tekton/run/a/0/out"]}).replace("/tekton/run", str(tmp_path))
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    assert sorted(p.name for p in (tmp_path / "pip-gate").iterdir()) == [gate]


def test_task_volumes_join_the_pod_and_a_clash_is_rejected() -> None:
    mount = {"name": "cfg", "mountPath": "/cfg"}
    one = {"volumes": [{"name": "cfg", "configMap": {"name": "a"}}]}
    plan = build([task("t", step("ls", volumeMounts=[mount]), spec=one)])
    assert {"name": "cfg", "configMap": {"name": "a"}} in plan.pod_spec["volumes"]
    assert mount in containers(plan)["step-t-unnamed-0"]["volumeMounts"]
    other = {"volumes": [{"name": "cfg", "configMap": {"name": "b"}}]}
    with pytest.raises(CompileError) as caught:
        build([task("t", spec=one), task("u", spec=other)])
    assert caught.value.field == "tasks[u].volumes[cfg]"


def test_a_matrix_fans_out_from_params_with_include_and_dependants_wait_for_all() -> None:
    plan = build(
        [
            task(
                "m",
                step("echo", "$(params.os)", "$(params.arch)", "$(params.flag)"),
                matrix={
                    "params": [
                        {"name": "os", "value": "$(params.oses[*])"},
                        {"name": "arch", "value": ["amd64", "arm64"]},
                    ],
                    "include": [
                        {"name": "all", "params": [{"name": "flag", "value": "-v"}]},
                        {
                            "name": "extra",
                            "params": [
                                {"name": "os", "value": "plan9"},
                                {"name": "arch", "value": "386"},
                                {"name": "flag", "value": "-x"},
                            ],
                        },
                    ],
                },
                spec={"params": [{"name": "os"}, {"name": "arch"}, {"name": "flag"}]},
            ),
            task("after", runAfter=["m"]),
        ],
        values={"oses": ["linux", "darwin"]},
        params=[{"name": "oses", "type": "array"}],
    )
    c = containers(plan)
    runs = [command(c[f"step-m-{i}-unnamed-0"])[1:] for i in range(5)]
    assert runs == [
        ["linux", "amd64", "-v"],
        ["linux", "arm64", "-v"],
        ["darwin", "amd64", "-v"],
        ["darwin", "arm64", "-v"],
        ["plan9", "386", "-x"],
    ]
    assert plan.task("after").deps == tuple(f"m-{i}" for i in range(5))


def _matrix(result_type: str = "string", **fields: Any) -> dict[str, Any]:
    results = [{"name": "r", "type": result_type}]
    return task(
        "m",
        matrix={"params": [{"name": "p", "value": ["a", "b"]}]},
        spec={"params": [{"name": "p"}], "results": results},
        **fields,
    )


@pytest.mark.parametrize(
    ("value", "result_type", "message"),
    [
        ("$(tasks.m.results.r)", "string", "only be consumed in aggregate using \\[\\*\\]"),
        ("$(tasks.m.results.r[0])", "string", "currently set to tasks.m.results.r\\[0\\]"),
        ("$(tasks.m.results.r[*])", "array", "underlying type string, but result r has type"),
    ],
)
def test_results_of_a_matrix_are_read_whole_and_must_be_strings_as_tekton_validates(
    value: str, result_type: str, message: str
) -> None:
    user = task("u", params=[{"name": "v", "value": value}], spec={"params": [{"name": "v"}]})
    with pytest.raises(CompileError, match=message) as caught:
        build([_matrix(result_type), user])
    assert caught.value.field == "tasks[u]"


def test_a_matrix_whose_results_are_read_gets_a_join_hidden_from_the_tasks() -> None:
    user = task(
        "u",
        step("echo", "$(params.v[*])", "$(params.n)", "$(params.k)"),
        params=[
            {"name": "v", "value": "$(tasks.m.results.r[*])"},
            {"name": "n", "value": "$(tasks.m.matrix.r.length)"},
            {"name": "k", "value": "$(tasks.m.matrix.length)"},
        ],
        spec={"params": [{"name": "v", "type": "array"}, {"name": "n"}, {"name": "k"}]},
    )
    plan = build([_matrix(), user])
    c = containers(plan)
    join = c["step-m-aggregate"]
    assert join["image"] == "shell:1"
    assert waited(join) == "/tekton/run/m-0/0/out,/tekton/run/m-1/0/out"
    inputs = {m["mountPath"]: m["name"] for m in join["volumeMounts"]}
    outputs = {m["mountPath"]: m["name"] for m in c["step-m-0-unnamed-0"]["volumeMounts"]}
    assert inputs["/pip/in/m-0"] == outputs["/tekton/results"]
    consumer = c["step-u-unnamed-0"]
    assert command(consumer) == [
        "echo",
        "$(steps.pip-m.results.r[*])",
        "$(steps.piplen-m.results.r)",
        "2",  # known when compiling
    ]
    mounts = {m["mountPath"]: m for m in consumer["volumeMounts"]}
    assert mounts["/tekton/steps/step-pip-m/results"]["name"] == inputs["/tekton/results"]
    assert mounts["/tekton/steps/step-piplen-m/results"]["subPath"] == "pip-length"
    assert plan.task("u").deps == ("m",)
    assert plan.matrices == {"m": ("m-0", "m-1")}


def test_a_matrix_in_finally_fans_out_into_finally_tasks() -> None:
    final = task(
        "f",
        step("echo", "$(params.p)"),
        matrix={"params": [{"name": "p", "value": ["x", "y"]}]},
        spec={"params": [{"name": "p"}]},
    )
    plan = build([task("a")], finally_=[final])
    c = containers(plan)
    assert [command(c[f"step-f-{i}-unnamed-0"]) for i in (0, 1)] == [["echo", "x"], ["echo", "y"]]
    assert [t.name for t in plan.tasks if t.is_finally] == ["f-0", "f-1"]


def test_the_join_script_aggregates_in_taskrun_name_order(tmp_path: Path) -> None:
    """m-10 sorts before m-2 (Tekton sorts TaskRuns by name); m-1 made no result."""
    for name, value in (("m-0", 'a"\\'), ("m-2", "c\n"), ("m-10", "b")):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "r").write_text(value)
    script = join_script(["m-0", "m-1", "m-2", "m-10"], ["r", "none"], str(tmp_path / "out"))
    script = script.replace("/pip/in", str(tmp_path / "in"))
    subprocess.run(["busybox", "sh", "-c", script], check=True, timeout=10)
    assert json.loads((tmp_path / "out" / "r").read_text()) == ['a"\\', "b", "c\n"]
    assert (tmp_path / "out" / "pip-length" / "r").read_text() == "3"
    assert not (tmp_path / "out" / "none").exists()  # Tekton finds no such result
    assert (tmp_path / "out" / "pip-length" / "none").read_text() == "0"


def test_too_many_containers_for_results_is_rejected_at_the_start() -> None:
    many = [task(f"t{i}") for i in range(60)]
    build(many)  # no results: the messages only carry start times
    with pytest.raises(CompileError, match="kubelet keeps 198 bytes") as caught:
        build([*many, task("r", spec={"results": [{"name": "x"}]})])
    assert caught.value.field == "tasks[r].results"


def test_the_scheduler_skips_users_of_results_a_when_withheld_without_stopping(
    tmp_path: Path,
) -> None:
    """maybe ended without running (its when was false): user, which needs its results, is
    skipped, and so is next (after user); other, elsewhere, still starts."""
    for path in ("maybe/0/out", "user/0/out.err", "x/0/out"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).touch()
    gates = {
        "user": ["/tekton/run/maybe/0/out"],
        "next": ["/tekton/run/user/0/out"],
        "other": ["/tekton/run/x/0/out"],
    }
    script = scheduler_script(gates, {"user": ["/tekton/run/maybe/ran"]})
    subprocess.run(
        ["sh", "-c", script.replace("/tekton/run", str(tmp_path))], check=True, timeout=10
    )
    assert sorted(p.name for p in (tmp_path / "pip-gate").iterdir()) == [
        "next.err",
        "other",
        "user.err",
    ]


def test_a_dependency_ending_while_the_scheduler_reads_excuses_never_lets_its_user_go(
    tmp_path: Path,
) -> None:
    """maybe ends (its when false: no marker) just after the scheduler read user's excuse
    (its ``ls`` found nothing yet): user is still skipped, in the next round, never let
    go without the results it needs (a CI flake under load)."""
    (tmp_path / "maybe" / "0").mkdir(parents=True)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "ls").write_text(  # the first ls: maybe ends as it looks, too late to be seen
        f'#!/bin/sh\nif [ ! -e "{shims}/once" ]; then touch "{shims}/once" '
        f'"{tmp_path}/maybe/0/out"; exit 2; fi\nexec /bin/ls "$@"\n'
    )
    (shims / "ls").chmod(0o755)
    script = scheduler_script(
        {"user": ["/tekton/run/maybe/0/out"]}, {"user": ["/tekton/run/maybe/ran"]}
    )
    subprocess.run(
        ["sh", "-c", script.replace("/tekton/run", str(tmp_path))],
        check=True,
        timeout=10,
        env={"PATH": f"{shims}:/usr/bin:/bin"},
    )
    assert (shims / "once").exists()
    assert sorted(p.name for p in (tmp_path / "pip-gate").iterdir()) == ["user.err"]


def test_v1_compute_resources_are_a_steps_and_a_sidecars_resources() -> None:
    wanted = {"requests": {"cpu": "1"}}
    plan = build(
        [
            task(
                "t",
                step("x", computeResources=wanted),
                spec={"sidecars": [{"name": "s", "image": "i", "computeResources": wanted}]},
            )
        ]
    )
    c = containers(plan)
    assert c["step-t-unnamed-0"]["resources"]["requests"] == {"cpu": "1000m"}
    assert c["sidecar-t-s"]["resources"] == wanted
    assert "computeResources" not in c["sidecar-t-s"]


def test_a_result_used_inside_an_inline_task_spec_orders_the_tasks_too() -> None:
    plan = build(
        [
            task("b", step("echo", "$(tasks.a.results.x)")),
            task("a", spec={"results": [{"name": "x"}]}),
        ]
    )
    assert plan.task("b").deps == ("a",)


# -- pipelines in pipelines ---------------------------------------------------------


def _child(**fields: Any) -> dict[str, Any]:
    """A child pipeline task: inner x, then y reading x's result and the child's param."""
    spec = {
        "params": [{"name": "word"}, {"name": "tail", "default": "!"}],
        "workspaces": [{"name": "src"}],
        "tasks": [
            task(
                "x",
                step("echo", "$(context.pipelineRun.name)"),
                spec={"results": [{"name": "r"}]},
            ),
            task(
                "y",
                step("echo", "$(params.word)$(params.tail)", "$(params.v)"),
                params=[{"name": "v", "value": "$(tasks.x.results.r)"}],
                workspaces=[{"name": "w", "workspace": "src", "subPath": "in"}],
                spec={"params": [{"name": "v"}], "workspaces": [{"name": "w"}]},
            ),
        ],
    }
    return {
        "name": "c",
        "pipelineSpec": spec,
        "params": [{"name": "word", "value": "$(params.greeting)"}],
        "workspaces": [{"name": "src", "workspace": "shared", "subPath": "repo"}],
        **fields,
    }


def _nested(*tasks: dict[str, Any], finally_: list[dict[str, Any]] | None = None) -> Plan:
    spec = PipelineSpec.model_validate(
        {
            "params": [{"name": "greeting"}],
            "workspaces": [{"name": "shared"}],
            "tasks": list(tasks),
            "finally": finally_ or [],
        }
    )
    resolved = {p.name: p.taskSpec for p in [*spec.tasks, *spec.finally_] if p.taskSpec}
    for inner in _child()["pipelineSpec"]["tasks"]:  # as the controller resolves them
        resolved[f"c-{inner['name']}"] = TaskSpec.model_validate(inner["taskSpec"])
    return compile_pipeline(spec, resolved, {"greeting": "hi"}, [], CTX, IMAGES)


def test_a_child_pipelines_tasks_join_the_pod_in_the_childs_scope() -> None:
    plan = _nested(task("a"), _child(runAfter=["a"]), task("after", runAfter=["c"]))
    c = containers(plan)
    assert command(c["step-c-x-unnamed-0"]) == ["echo", "pr-c"]  # Tekton's child run name
    assert command(c["step-c-y-unnamed-0"]) == ["echo", "hi!", "$(steps.pip-c-x.results.r)"]
    assert plan.task("c-x").deps == ("a",)
    assert plan.task("c-y").deps == ("a", "c-x")
    assert plan.task("after").deps == ("c",)  # the child's end: its outcome
    assert plan.task("c").deps == ("a",)
    assert plan.children == {"c"}
    mounts = {m["mountPath"]: m for m in c["step-c-y-unnamed-0"]["volumeMounts"]}
    assert mounts["/workspace/w"]["subPath"] == "repo/in"  # the parent's workspace


@pytest.mark.parametrize(
    ("tasks", "finally_", "field", "message"),
    [
        (
            [_child(), task("u", params=[{"name": "v", "value": "$(tasks.c.results.r)"}])],
            [],
            "tasks[u]",
            'result reference to pipelineTask "c" is not supported',
        ),
        (
            [_child(matrix={"params": [{"name": "p", "value": ["1"]}]})],
            [],
            "tasks[c].matrix",
            "does not fan out",
        ),
        ([_child(timeout="1m")], [], "tasks[c].timeout", "does not apply a timeout"),
    ],
)
def test_what_tekton_does_not_do_with_a_child_pipeline_is_rejected(
    tasks: list[dict[str, Any]], finally_: list[dict[str, Any]], field: str, message: str
) -> None:
    with pytest.raises(CompileError, match=message) as caught:
        _nested(*tasks, finally_=finally_)
    assert caught.value.field == field


def test_a_volume_claim_template_binds_the_workspace_to_a_claim_named_as_tekton_names_it() -> None:
    template = {"metadata": {"name": "cache"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    plan = build(
        [
            task(
                "t",
                workspaces=[{"name": "w", "workspace": "src"}],
                spec={"workspaces": [{"name": "w"}]},
            )
        ],
        bindings=[
            {"name": "src", "volumeClaimTemplate": template},
            {"name": "other", "volumeClaimTemplate": {"spec": {}}},
        ],
        workspaces=[{"name": "src"}, {"name": "other"}],
    )
    # Tekton: <template name, else "pvc">-<sha256(workspace name + owner uid)[:10]>
    expected = "cache-" + hashlib.sha256(b"src" + CTX.uid.encode()).hexdigest()[:10]
    assert [c["metadata"]["name"] for c in plan.claims] == [
        expected,
        "pvc-" + hashlib.sha256(b"other" + CTX.uid.encode()).hexdigest()[:10],
    ]
    assert plan.claims[0]["spec"] == template["spec"]
    volumes = {v["name"]: v for v in plan.pod_spec["volumes"]}
    assert volumes["ws-src"] == {"name": "ws-src", "persistentVolumeClaim": {"claimName": expected}}


def test_a_child_workspace_the_child_task_leaves_unbound_fails_the_task_needing_it() -> None:
    with pytest.raises(CompileError, match="the task needs this workspace") as caught:
        _nested(_child(workspaces=[]))
    assert caught.value.field == "tasks[c-y].workspaces[w]"


def test_a_child_pipeline_tasks_when_is_read_in_the_parents_scope() -> None:
    skip = [{"input": "$(params.greeting)", "operator": "in", "values": ["bye"]}]
    plan = _nested(_child(when=skip))
    assert {t.name: t.skipped for t in plan.tasks} == {
        "c": "WhenExpressionsEvaluatedFalse",
        "c-x": "WhenExpressionsEvaluatedFalse",
        "c-y": "WhenExpressionsEvaluatedFalse",
    }
    run = _nested(_child(when=[{**skip[0], "values": ["hi"]}]))
    assert {t.name: t.skipped for t in run.tasks} == {"c": None, "c-x": None, "c-y": None}


@pytest.mark.parametrize(
    ("failed", "gates"),
    [("c-x", ["b", "c-y.err"]), ("p", ["b.err", "c-y"])],
)
def test_a_failure_stops_only_its_own_pipeline(
    tmp_path: Path, failed: str, gates: list[str]
) -> None:
    """c-y after c-x in child c; b after a in the parent; p another parent task. A child
    run stops alone (the parent learns when it ends); the parent's stop is not the
    running child's."""
    for name in ("a", "c-x", "p"):
        (tmp_path / name / "0").mkdir(parents=True)
        (tmp_path / name / "0" / ("out.err" if name == failed else "out")).touch()
    script = scheduler_script(
        {"b": ["/tekton/run/a/0/out"], "c-y": ["/tekton/run/c-x/0/out"]},
        owner={"c-x": "c", "c-y": "c"},
        deciding={"c-y": "c"},
    ).replace("/tekton/run", str(tmp_path))
    subprocess.run(["sh", "-c", script], check=True, timeout=10)
    assert sorted(p.name for p in (tmp_path / "pip-gate").iterdir()) == gates


@pytest.mark.parametrize(
    ("x", "f", "f_gate", "code"),
    [
        ("out", "out", "", 0),
        ("out.err", "out", "", 1),  # a task of the child failed
        ("out", "out.err", "", 1),  # its finally failed
        ("out", "out.err", ".err", 0),  # its finally was skipped (results missing)
    ],
)
def test_a_childs_end_ends_as_tekton_ends_the_child_run(
    tmp_path: Path, x: str, f: str, f_gate: str, code: int
) -> None:
    run = tmp_path / "run"
    for name, file in (("c-x", x), ("c-f", f)):
        (run / name / "0").mkdir(parents=True)
        (run / name / "0" / file).touch()
    gate = run / BARRIER_CONTAINER / "c-f"
    gate.parent.mkdir()
    gate.with_name(f"c-f{f_gate}").touch()
    barrier = barrier_script(
        {"c-x": []}, {"c-x": "/tekton/run/c-x/0/out"}, (), out="/pip/status/child-c"
    )
    script = end_script(
        barrier, {"c-f": ("/tekton/run/c-f/0/out", f"/tekton/run/{BARRIER_CONTAINER}/c-f")}
    )
    script = script.replace("/tekton/run", str(run)).replace("/pip/status", str(tmp_path))
    ended = subprocess.run(["sh", "-c", script], check=False, timeout=10)
    assert ended.returncode == code
    assert (tmp_path / "child-c" / "task-c-x").read_text() == (
        "Failed" if x != "out" else "Succeeded"
    )


def test_a_child_in_finally_starts_when_the_barrier_releases_it() -> None:
    child = _child()
    plan = _nested(
        task("a"), finally_=[{**child, "params": [{"name": "word", "value": "$(tasks.a.status)"}]}]
    )
    c = containers(plan)
    gate = f"/tekton/run/{BARRIER_CONTAINER}/c"
    assert flag(c["step-c-x-unnamed-0"], "-wait_file") == gate  # not after a: finally
    assert flag(c["step-c-end"], "-wait_file") == gate
    assert plan.task("c-x").is_finally
    assert plan.task("c-y").deps == ("c-x",)


def test_a_childs_finally_reads_the_childs_statuses_and_a_parent_reads_the_childs() -> None:
    child = _child()
    child["pipelineSpec"]["finally"] = [
        task("f", step("echo", "$(tasks.status)", "$(tasks.x.status)"))
    ]
    plan = _nested(
        child,
        finally_=[task("report", step("echo", "$(tasks.c.status)"))],
    )
    c = containers(plan)
    assert command(c["step-c-f-unnamed-0"]) == [
        "echo",
        "$(steps.pip-status.results.aggregate)",
        "$(steps.pip-status.results.task-c-x)",
    ]
    status = next(m for m in c["step-c-f-unnamed-0"]["volumeMounts"] if m["name"] == "pip-status")
    assert status["subPath"] == "child-c"  # the child's barrier writes there
    assert command(c["step-report-unnamed-0"]) == ["echo", "$(steps.pip-status.results.task-c)"]
    assert "subPath" not in next(
        m for m in c["step-report-unnamed-0"]["volumeMounts"] if m["name"] == "pip-status"
    )
    assert flag(c["step-c-f-unnamed-0"], "-wait_file") == f"/tekton/run/{BARRIER_CONTAINER}/c-f"
