"""Compiled Pods run for real (Tekton's entrypoint, busybox) as local processes.

No node: each container is a chrooted process (static busybox for every image) in a mount
namespace with its volumes bind-mounted; init containers one after another, then every
container at once, as a kubelet runs a Pod. What this proves is the compiler's wiring under
Tekton's own entrypoint: order, skips after a failure, results between tasks at run time,
``when`` on results, finally with statuses, onError, step timeouts. Root only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from customtask_sdk.testing.testbin import cache_dir
from examples.pipeline_in_pod.compiler import (
    READY_ANNOTATION,
    Images,
    Plan,
    RunContext,
    compile_pipeline,
)
from examples.pipeline_in_pod.model import PipelineSpec, TaskSpec
from examples.pipeline_in_pod.status import PodView, read_pod

# -- a tiny kubelet: each container a chrooted process in a mount namespace ----------

JSON = dict[str, Any]
APPLETS = [
    "sh",
    "cat",
    "echo",
    "printf",
    "sleep",
    "touch",
    "true",
    "false",
    "test",
    "[",
    "mkdir",
    "tr",
    "ls",
    "env",
    "grep",
    "wc",
    "head",
    "rm",
    "cp",
    "od",
    "awk",
    "ln",
]


def entrypoint_binary() -> Path | None:
    """Tekton's entrypoint as the control plane's testbin built it, if it did."""
    found = sorted(cache_dir().glob("testbin/tekton-*/entrypoint"))
    return found[-1] if found else None


def usable() -> str | None:
    """Why local Pods cannot run here, or ``None``."""
    if os.geteuid() != 0:
        return "local Pods need root (mount namespaces, chroot)"
    if shutil.which("busybox") is None or shutil.which("unshare") is None:
        return "local Pods need busybox and unshare"
    if entrypoint_binary() is None:
        return "Tekton's entrypoint is not built (bash hack/testbin.sh)"
    return None


def _root(base: Path, name: str) -> Path:
    root = base / "roots" / name
    (root / "bin").mkdir(parents=True)
    (root / "ko-app").mkdir()
    shutil.copy(shutil.which("busybox") or "", root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    entrypoint = entrypoint_binary()
    assert entrypoint is not None
    shutil.copy(entrypoint, root / "ko-app" / "entrypoint")
    (root / "tmp").mkdir()
    return root


def _start(base: Path, container: JSON, volumes: dict[str, Path]) -> subprocess.Popen[bytes]:
    root = _root(base, container["name"])
    (root / "dev").mkdir()
    lines = ["set -e", f"mount --rbind /dev {shlex.quote(str(root / 'dev'))}"]
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
            source.mkdir(parents=True, exist_ok=True)
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(str(target))}")
    termination = container.get("terminationMessagePath")
    if termination:
        path = root / termination.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    env = ["PATH=/bin:/usr/bin", "HOME=/tmp"]
    env += [f"{e['name']}={e.get('value', '')}" for e in container.get("env") or []]
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    workdir = container.get("workingDir") or "/"
    (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    inner = " ".join(shlex.quote(a) for a in ["cd", workdir])
    inner += " && exec " + " ".join(shlex.quote(a) for a in ["env", "-i", *env, *argv])
    lines.append(f"exec chroot {shlex.quote(str(root))} /bin/sh -c {shlex.quote(inner)}")
    log = open(base / f"{container['name']}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_pod(
    pod_spec: JSON, base: Path, *, timeout: float = 60, annotations: JSON | None = None
) -> JSON:
    """Run the Pod to the end; its ``status`` (``containerStatuses``) as a kubelet reports."""
    volumes: dict[str, Path] = {}
    for volume in pod_spec.get("volumes") or []:
        folder = base / "volumes" / volume["name"]
        folder.mkdir(parents=True)
        for item in (volume.get("downwardAPI") or {}).get("items") or []:
            key = item["fieldRef"]["fieldPath"].split("'")[1]
            (folder / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / item["path"]).write_text((annotations or {}).get(key, ""))
        volumes[volume["name"]] = folder
    for container in pod_spec.get("initContainers") or []:
        process = _start(base, container, volumes)
        assert process.wait(timeout) == 0, (base / f"{container['name']}.log").read_text()
    processes = {c["name"]: (c, _start(base, c, volumes)) for c in pod_spec["containers"]}
    statuses = []
    for name, (container, process) in processes.items():
        if name.startswith("sidecar-"):
            continue
        code = process.wait(timeout)
        message = ""
        if container.get("terminationMessagePath"):
            message = (
                base / "roots" / name / container["terminationMessagePath"].lstrip("/")
            ).read_text()
        statuses.append(
            {"name": name, "state": {"terminated": {"exitCode": code, "message": message}}}
        )
    for name, (_, process) in processes.items():
        if name.startswith("sidecar-"):
            process.kill()
            process.wait()
            statuses.append({"name": name, "state": {"terminated": {"exitCode": 137}}})
    return {"phase": "Succeeded", "containerStatuses": statuses}


def log(base: Path, container: str) -> str:
    """A container's output."""
    return (base / f"{container}.log").read_text()


def pod(pod_spec: JSON, status: JSON) -> JSON:
    """A Pod object around a spec and status (for ``read_pod``)."""
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": pod_spec,
        "status": json.loads(json.dumps(status)),
    }


# -- tests ----------------------------------------------------------------------------

pytestmark = pytest.mark.skipif(usable() is not None, reason=str(usable()))

CTX = RunContext(name="run", namespace="ns", uid="u", pipeline="pl", pipeline_run="pr")


def _specs(spec: PipelineSpec, prefix: str = "") -> dict[str, TaskSpec]:
    """Each task's inline spec, a child pipeline's as ``<child>-<task>`` (as resolved)."""
    out: dict[str, TaskSpec] = {}
    for ptask in [*spec.tasks, *spec.finally_]:
        if ptask.pipelineSpec is not None:
            out.update(_specs(ptask.pipelineSpec, f"{prefix}{ptask.name}-"))
        elif ptask.taskSpec is not None:
            out[f"{prefix}{ptask.name}"] = ptask.taskSpec
    return out


def run(
    tmp_path: Path, pipeline: dict[str, Any], values: dict[str, Any] | None = None
) -> tuple[Plan, PodView]:
    spec = PipelineSpec.model_validate(pipeline)
    tasks = _specs(spec)
    plan = compile_pipeline(spec, tasks, values or {}, [], CTX, Images("ep", "nop", "sh"))
    # The controller marks the Pod ready once its sidecars are (here: from the start).
    status = run_pod(plan.pod_spec, tmp_path, annotations={READY_ANNOTATION: "READY"})
    return plan, read_pod(plan, pod(plan.pod_spec, status))


#: A task whose result ``go`` is ``no``; ``go(op)``: a ``when`` on it.
DECIDE_NO = {
    "name": "decide",
    "taskSpec": {
        "results": [{"name": "go"}],
        "steps": [{"image": "b", "script": "printf no > $(results.go.path)"}],
    },
}


def go(operator: str) -> list[dict[str, Any]]:
    return [{"input": "$(tasks.decide.results.go)", "operator": operator, "values": ["yes"]}]


def states(view: PodView) -> dict[str, str]:
    return {t["name"]: t["state"] for t in view.tasks}


def sh(script: str, **fields: Any) -> dict[str, Any]:
    return {"image": "busybox", "script": script, **fields}


def test_results_flow_between_tasks_at_run_time_into_args_env_and_scripts(tmp_path: Path) -> None:
    plan, view = run(
        tmp_path,
        {
            "params": [{"name": "who", "default": "pod"}],
            "workspaces": [{"name": "shared"}],
            "tasks": [
                {
                    "name": "make",
                    "workspaces": [{"name": "w", "workspace": "shared"}],
                    "taskSpec": {
                        "workspaces": [{"name": "w"}],
                        "results": [{"name": "word"}, {"name": "list", "type": "array"}],
                        "steps": [
                            sh(
                                "printf hello-$(params.who) > $(results.word.path)\n"
                                'printf \'["a","b"]\' > $(results.list.path)\n'
                                "echo data > $(workspaces.w.path)/file"
                            )
                        ],
                    },
                },
                {
                    "name": "use",
                    "params": [{"name": "v", "value": "$(tasks.make.results.word)"}],
                    "workspaces": [{"name": "w", "workspace": "shared"}],
                    "taskSpec": {
                        "params": [{"name": "v"}],
                        "workspaces": [{"name": "w"}],
                        "results": [{"name": "seen"}],
                        "steps": [
                            {
                                "image": "busybox",
                                "command": [
                                    "sh",
                                    "-c",
                                    'printf "%s|%s|$(params.v)" "$E" "$1" > $(results.seen.path)',
                                    "--",
                                ],
                                "args": ["$(tasks.make.results.list[*])"],
                                "env": [{"name": "E", "value": "$(tasks.make.results.word)"}],
                            },
                            sh(
                                'printf "%s:%s" "$(tasks.make.results.word)"'
                                ' "$(cat $(workspaces.w.path)/file)" >> $(results.seen.path)'
                            ),
                        ],
                    },
                },
            ],
            "results": [
                {"name": "seen", "value": "$(tasks.use.results.seen)"},
                {"name": "list", "value": "$(tasks.make.results.list[*])"},
            ],
        },
    )
    assert states(view) == {"make": "succeeded", "use": "succeeded"}, view.tasks
    assert view.verdict is not None
    assert view.verdict.succeeded
    assert view.verdict.results == {
        "seen": "hello-pod|a|hello-podhello-pod:data",
        "list": ["a", "b"],
    }
    del plan


def test_a_failure_skips_its_dependants_and_finally_sees_the_statuses(tmp_path: Path) -> None:
    plan, view = run(
        tmp_path,
        {
            "tasks": [
                {"name": "bad", "taskSpec": {"steps": [sh("exit 3"), sh("echo never")]}},
                {"name": "after", "runAfter": ["bad"], "taskSpec": {"steps": [sh("echo no")]}},
                {"name": "apart", "taskSpec": {"steps": [sh("echo yes")]}},
                {
                    "name": "tolerant",
                    "taskSpec": {"steps": [sh("exit 1", onError="continue"), sh("true")]},
                },
            ],
            "finally": [
                {
                    "name": "report",
                    "params": [{"name": "all", "value": "$(tasks.status)"}],
                    "taskSpec": {
                        "params": [{"name": "all"}],
                        "results": [{"name": "r"}],
                        "steps": [
                            sh(
                                'printf "$(params.all) $(tasks.bad.status) $(tasks.after.status) '
                                '$(tasks.apart.status)" > $(results.r.path)'
                            )
                        ],
                    },
                }
            ],
            "results": [{"name": "report", "value": "$(tasks.report.results.r)"}],
        },
    )
    assert states(view) == {
        "bad": "failed",
        "after": "skipped",
        "apart": "succeeded",
        "tolerant": "succeeded",
        "report": "succeeded",
    }, view.tasks
    bad = next(t for t in view.tasks if t["name"] == "bad")
    assert bad["steps"][0]["exitCode"] == 3
    assert bad["steps"][0]["logs"] == f"kubectl logs -n ns p -c {bad['steps'][0]['container']}"
    assert view.verdict is not None
    assert (view.verdict.succeeded, view.verdict.reason) == (False, "Failed")
    assert "'bad'" in view.verdict.message
    report = next(t for t in view.tasks if t["name"] == "report")
    assert report["results"] == {"r": "Failed Failed None Succeeded"}
    assert view.verdict.results == {"report": "Failed Failed None Succeeded"}  # as Tekton
    del plan


def test_when_on_a_result_is_decided_in_the_pod(tmp_path: Path) -> None:
    _, view = run(
        tmp_path,
        {
            "tasks": [
                DECIDE_NO,
                {
                    "name": "maybe",
                    "when": go("in"),
                    "taskSpec": {"steps": [sh("exit 1")]},
                },
                {
                    "name": "surely",
                    "when": go("notin"),
                    "taskSpec": {"steps": [sh("true")]},
                },
            ]
        },
    )
    assert states(view) == {
        "decide": "succeeded",
        "maybe": "skipped",
        "surely": "succeeded",
    }, view.tasks


def test_a_steps_timeout_fails_its_task_and_a_tasks_own_times_it_out(tmp_path: Path) -> None:
    # Apart from other tasks: a failure stops the pipeline from starting new ones.
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {"name": "slow", "taskSpec": {"steps": [sh("sleep 30", timeout="1s")]}},
                {"name": "bounded", "timeout": "1s", "taskSpec": {"steps": [sh("sleep 30")]}},
            ]
        },
    )
    assert states(view) == {"slow": "failed", "bounded": "timedOut"}
    assert view.verdict is not None
    assert not view.verdict.succeeded


def test_the_sample_build_and_test_pipeline_runs(tmp_path: Path) -> None:
    sample = Path(__file__).parents[2] / "examples" / "pipeline_in_pod" / "pipelinerun.yaml"
    docs = {d["metadata"].get("name"): d for d in yaml.safe_load_all(sample.read_text())}
    spec = PipelineSpec.model_validate(docs["build-and-test"]["spec"])
    compile_task = TaskSpec.model_validate(docs["compile"]["spec"])
    tasks = {t.name: t.taskSpec or compile_task for t in [*spec.tasks, *spec.finally_]}
    plan = compile_pipeline(spec, tasks, {"revision": "v1"}, [], CTX, Images("ep", "nop", "sh"))
    view = read_pod(plan, pod(plan.pod_spec, run_pod(plan.pod_spec, tmp_path)))
    assert all(t["state"] == "succeeded" for t in view.tasks), view.tasks
    assert view.verdict is not None
    assert view.verdict.results == {"image": "registry.local/app-v1"}


def test_once_a_task_fails_no_new_task_starts_as_tekton_stops_a_pipeline(tmp_path: Path) -> None:
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {"name": "fails", "taskSpec": {"steps": [sh("exit 1")]}},
                {"name": "running", "taskSpec": {"steps": [sh("sleep 2")]}},
                {"name": "next", "runAfter": ["running"], "taskSpec": {"steps": [sh("true")]}},
            ]
        },
    )
    assert states(view) == {"fails": "failed", "running": "succeeded", "next": "skipped"}


def test_step_results_flow_to_later_steps_of_the_task(tmp_path: Path) -> None:
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {
                    "name": "t",
                    "taskSpec": {
                        "results": [{"name": "out"}],
                        "steps": [
                            sh(
                                "printf hi > $(step.results.word.path)",
                                name="make",
                                results=[{"name": "word"}],
                            ),
                            {
                                "name": "use",
                                "image": "busybox",
                                "command": [
                                    "sh",
                                    "-c",
                                    'printf "$1:$W" > $(results.out.path)',
                                    "--",
                                ],
                                "args": ["$(steps.make.results.word)"],
                                "env": [{"name": "W", "value": "$(steps.make.results.word)"}],
                            },
                        ],
                    },
                }
            ],
            "results": [{"name": "out", "value": "$(tasks.t.results.out)"}],
        },
    )
    assert view.verdict is not None
    assert view.verdict.results == {"out": "hi:hi"}, view.tasks


def test_a_task_skipped_by_when_in_the_pod_is_none_and_its_result_users_are_skipped(
    tmp_path: Path,
) -> None:
    _, view = run(
        tmp_path,
        {
            "tasks": [
                DECIDE_NO,
                {
                    "name": "maybe",
                    "when": go("in"),
                    "taskSpec": {
                        "results": [{"name": "r"}],
                        "steps": [sh("printf made > $(results.r.path)")],
                    },
                },
                {
                    "name": "user",
                    "params": [{"name": "v", "value": "$(tasks.maybe.results.r)"}],
                    "taskSpec": {"params": [{"name": "v"}], "steps": [sh("echo $(params.v)")]},
                },
                {"name": "after", "runAfter": ["maybe"], "taskSpec": {"steps": [sh("true")]}},
            ],
            "finally": [
                {
                    "name": "f",
                    "params": [
                        {"name": "m", "value": "$(tasks.maybe.status)"},
                        {"name": "all", "value": "$(tasks.status)"},
                    ],
                    "taskSpec": {
                        "params": [{"name": "m"}, {"name": "all"}],
                        "results": [{"name": "seen"}],
                        "steps": [sh('printf "$(params.m) $(params.all)" > $(results.seen.path)')],
                    },
                }
            ],
        },
    )
    assert states(view) == {
        "decide": "succeeded",
        "maybe": "skipped",
        "user": "skipped",
        "after": "succeeded",
        "f": "succeeded",
    }, view.tasks
    final = next(t for t in view.tasks if t["name"] == "f")
    assert final["results"] == {"seen": "None Completed"}


def test_a_sidecar_runs_beside_the_steps_that_use_it(tmp_path: Path) -> None:
    server = "mkdir -p /s && echo up > /s/state && trap 'exit 0' TERM; while true; do sleep 1; done"
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {
                    "name": "t",
                    "taskSpec": {
                        "volumes": [{"name": "shared", "emptyDir": {}}],
                        "sidecars": [
                            {
                                "name": "svc",
                                "image": "busybox",
                                "script": f"#!/bin/sh\n{server}",
                                "volumeMounts": [{"name": "shared", "mountPath": "/s"}],
                            }
                        ],
                        "results": [{"name": "seen"}],
                        "steps": [
                            sh(
                                "until [ -e /s/state ]; do sleep 0.1; done\n"
                                "cat /s/state | tr -d '\\n' > $(results.seen.path)",
                                volumeMounts=[{"name": "shared", "mountPath": "/s"}],
                            )
                        ],
                    },
                }
            ]
        },
    )
    assert states(view) == {"t": "succeeded"}, view.tasks
    assert view.tasks[0]["results"] == {"seen": "up"}


def test_a_finally_task_missing_results_is_skipped_and_the_others_run(tmp_path: Path) -> None:
    failing = {"results": [{"name": "x"}], "steps": [sh("exit 1")]}
    reads_x = {"params": [{"name": "v"}], "steps": [sh("echo $(params.v)")]}
    _, view = run(
        tmp_path,
        {
            "tasks": [{"name": "a", "taskSpec": failing}],
            "finally": [
                {
                    "name": "uses",
                    "params": [{"name": "v", "value": "$(tasks.a.results.x)"}],
                    "taskSpec": reads_x,
                },
                {"name": "plain", "taskSpec": {"steps": [sh("true")]}},
            ],
        },
    )
    assert states(view) == {"a": "failed", "uses": "skipped", "plain": "succeeded"}


def test_a_pipeline_result_from_a_finally_task(tmp_path: Path) -> None:
    _, view = run(
        tmp_path,
        {
            "tasks": [{"name": "a", "taskSpec": {"steps": [sh("true")]}}],
            "finally": [
                {
                    "name": "f",
                    "taskSpec": {
                        "results": [{"name": "out"}],
                        "steps": [sh("printf done > $(results.out.path)")],
                    },
                }
            ],
            "results": [{"name": "r", "value": "$(finally.f.results.out)"}],
        },
    )
    assert view.verdict is not None
    assert view.verdict.results == {"r": "done"}


def test_matrix_results_are_aggregated_into_arrays_with_their_lengths(tmp_path: Path) -> None:
    # Eleven instances: Tekton orders them by TaskRun name, so "m-10" comes before "m-2";
    # "m-3" produces no result and is left out; values keep quotes, backslashes, newlines.
    script = (
        'if [ "$(params.n)" != 3 ]; then printf \'v$(params.n) "q" \\\\ \\n\' > '
        "$(results.out.path); fi"
    )
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {
                    "name": "m",
                    "matrix": {"params": [{"name": "n", "value": [str(i) for i in range(11)]}]},
                    "taskSpec": {
                        "params": [{"name": "n"}],
                        "results": [{"name": "out"}],
                        "steps": [sh(script)],
                    },
                },
                {
                    "name": "use",
                    "runAfter": ["m"],
                    "params": [
                        {"name": "all", "value": "$(tasks.m.results.out[*])"},
                        {"name": "count", "value": "$(tasks.m.matrix.length)"},
                        {"name": "made", "value": "$(tasks.m.matrix.out.length)"},
                    ],
                    "taskSpec": {
                        "params": [
                            {"name": "all", "type": "array"},
                            {"name": "count"},
                            {"name": "made"},
                        ],
                        "results": [{"name": "seen"}],
                        "steps": [
                            {
                                "image": "busybox",
                                "command": [
                                    "sh",
                                    "-c",
                                    'printf "%s|" "$@" > $(results.seen.path)',
                                    "--",
                                ],
                                "args": ["$(params.all[*])"],
                            },
                            sh('printf "$(params.count)/$(params.made)" >> $(results.seen.path)'),
                        ],
                    },
                },
            ],
            "finally": [
                {
                    "name": "f",
                    "matrix": {"params": [{"name": "x", "value": ["a", "b"]}]},
                    "taskSpec": {
                        "params": [{"name": "x"}],
                        "results": [{"name": "out"}],
                        "steps": [sh("printf 'f-$(params.x)' > $(results.out.path)")],
                    },
                }
            ],
            "results": [
                {"name": "seen", "value": "$(tasks.use.results.seen)"},
                {"name": "all", "value": "$(tasks.m.results.out[*])"},
                {"name": "fs", "value": "$(finally.f.results.out[*])"},
            ],
        },
    )
    expected = {f"m-{i}": "succeeded" for i in range(11)}
    assert states(view) == {**expected, "use": "succeeded", "f-0": "succeeded", "f-1": "succeeded"}
    assert view.verdict is not None
    assert view.verdict.succeeded, view.verdict
    order = ["0", "1", "10", "2", "4", "5", "6", "7", "8", "9"]
    values = [f'v{n} "q" \\ \n' for n in order]
    assert view.verdict.results == {
        "seen": "".join(f"{v}|" for v in values) + "11/10",
        "all": values,
        "fs": ["f-a", "f-b"],
    }


def test_custom_tasks_stand_ins_pass_outcomes_and_results_as_tekton_would(tmp_path: Path) -> None:
    # The controller's annotations are there from the start: each stand-in goes at once.
    pipeline = PipelineSpec.model_validate(
        {
            "tasks": [
                {"name": "build", "taskSpec": {"steps": [sh("true")]}},
                {
                    "name": "approval",
                    "runAfter": ["build"],
                    "taskRef": {"apiVersion": "approval.customtask.dev/v1alpha1", "kind": "A"},
                },
                {
                    "name": "publish",
                    "params": [
                        {"name": "d", "value": "$(tasks.approval.results.decision)"},
                        {"name": "who", "value": ["$(tasks.approval.results.by[*])"]},
                    ],
                    "taskSpec": {
                        "params": [{"name": "d"}, {"name": "who", "type": "array"}],
                        "results": [{"name": "out"}],
                        "steps": [
                            {
                                "image": "busybox",
                                "command": ["sh", "-c", 'printf "$0:$*" > $(results.out.path)'],
                                "args": ["$(params.d)", "$(params.who[*])"],
                            }
                        ],
                    },
                },
                {
                    "name": "wait",
                    "runAfter": ["publish"],
                    "taskRef": {"apiVersion": "wait.dev/v1", "kind": "Wait"},
                },
                {"name": "after-wait", "runAfter": ["wait"], "taskSpec": {"steps": [sh("true")]}},
            ],
            "finally": [
                {
                    "name": "report",
                    "params": [{"name": "s", "value": "$(tasks.wait.status)"}],
                    "taskSpec": {
                        "params": [{"name": "s"}],
                        "results": [{"name": "out"}],
                        "steps": [sh("printf $(params.s) > $(results.out.path)")],
                    },
                }
            ],
            "results": [
                {"name": "published", "value": "$(tasks.publish.results.out)"},
                {"name": "reported", "value": "$(finally.report.results.out)"},
            ],
        }
    )
    tasks = {t.name: t.taskSpec for t in [*pipeline.tasks, *pipeline.finally_] if t.taskSpec}
    plan = compile_pipeline(pipeline, tasks, {}, [], CTX, Images("ep", "nop", "sh"))
    approval, wait = plan.custom["approval"], plan.custom["wait"]
    annotations = {
        approval.state_key: "Succeeded",
        approval.result_key("decision"): "approved",
        approval.result_key("by"): '["alice","bob"]',
        wait.state_key: "CustomRunTimedOut: timed out",
    }
    status = run_pod(plan.pod_spec, tmp_path, annotations=annotations)
    view = read_pod(plan, pod(plan.pod_spec, status))
    assert states(view) == {
        "build": "succeeded",
        "approval": "succeeded",
        "publish": "succeeded",
        "wait": "failed",
        "after-wait": "skipped",
        "report": "succeeded",
    }
    assert view.verdict is not None
    assert view.verdict.results == {"published": "approved:alice bob", "reported": "Failed"}


def _reporter(name: str, statuses: str) -> dict[str, Any]:
    """A finally task writing ``statuses`` (``$(tasks...status)`` references) as result r."""
    return {
        "name": name,
        "taskSpec": {
            "results": [{"name": "r"}],
            "steps": [sh(f'printf "{statuses}" > $(results.r.path)')],
        },
    }


def _child_with_finally(code: str) -> dict[str, Any]:
    """Child pipeline ``c``: x exits ``code``, y after x; its finally reports statuses."""
    return {
        "name": "c",
        "runAfter": ["a"],
        "pipelineSpec": {
            "tasks": [
                {"name": "x", "taskSpec": {"steps": [sh(f"exit {code}")]}},
                {"name": "y", "runAfter": ["x"], "taskSpec": {"steps": [sh("true")]}},
            ],
            "finally": [_reporter("f", "$(tasks.status) $(tasks.x.status) $(tasks.y.status)")],
        },
    }


@pytest.mark.parametrize(
    ("code", "child", "expected"),
    [
        ("0", "Succeeded Succeeded Succeeded", "succeeded"),
        ("3", "Failed Failed None", "skipped"),
    ],
)
def test_a_childs_finally_runs_after_the_childs_tasks_and_its_outcome_is_the_child_tasks(
    tmp_path: Path, code: str, child: str, expected: str
) -> None:
    """The child's finally sees the child's statuses; the child's outcome (its tasks and
    its finally) is what the parent's dependants and finally see."""
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {"name": "a", "taskSpec": {"steps": [sh("true")]}},
                _child_with_finally(code),
                {"name": "after", "runAfter": ["c"], "taskSpec": {"steps": [sh("true")]}},
            ],
            "finally": [_reporter("report", "$(tasks.status) $(tasks.c.status)")],
        },
    )
    failed = code != "0"
    assert states(view) == {
        "a": "succeeded",
        "c-x": "failed" if failed else "succeeded",
        "c-y": "skipped" if failed else "succeeded",
        "c-f": "succeeded",
        "after": expected,
        "report": "succeeded",
    }, view.tasks
    assert view.results["c-f"] == {"r": child}
    outcome = "Failed Failed" if failed else "Succeeded Succeeded"
    assert view.results["report"] == {"r": outcome}
    assert view.verdict is not None
    assert view.verdict.succeeded is not failed


def test_a_failing_childs_finally_fails_the_child_for_the_parent(tmp_path: Path) -> None:
    child = _child_with_finally("0")
    child["pipelineSpec"]["finally"] = [{"name": "f", "taskSpec": {"steps": [sh("exit 1")]}}]
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {"name": "a", "taskSpec": {"steps": [sh("true")]}},
                child,
                {"name": "after", "runAfter": ["c"], "taskSpec": {"steps": [sh("true")]}},
            ],
            "finally": [_reporter("report", "$(tasks.status) $(tasks.c.status)")],
        },
    )
    assert states(view)["after"] == "skipped"
    assert view.results["report"] == {"r": "Failed Failed"}


def test_a_child_in_finally_runs_after_the_tasks_and_a_matrix_fans_out_in_a_child(
    tmp_path: Path,
) -> None:
    _, view = run(
        tmp_path,
        {
            "tasks": [{"name": "a", "taskSpec": {"steps": [sh("exit 1")]}}],
            "finally": [
                {
                    "name": "fc",
                    "params": [{"name": "s", "value": "$(tasks.a.status)"}],
                    "pipelineSpec": {
                        "params": [
                            {"name": "s"},
                            {"name": "n", "type": "array", "default": ["1", "2"]},
                        ],
                        "tasks": [
                            {
                                "name": "m",
                                "matrix": {"params": [{"name": "n", "value": "$(params.n[*])"}]},
                                "params": [{"name": "s", "value": "$(params.s)"}],
                                "taskSpec": {
                                    "params": [{"name": "n"}, {"name": "s"}],
                                    "results": [{"name": "r"}],
                                    "steps": [
                                        sh('printf "$(params.s)-$(params.n)" > $(results.r.path)')
                                    ],
                                },
                            },
                            {
                                "name": "join",
                                "params": [{"name": "all", "value": "$(tasks.m.results.r[*])"}],
                                "taskSpec": {
                                    "params": [{"name": "all", "type": "array"}],
                                    "results": [{"name": "r"}],
                                    "steps": [
                                        {
                                            "image": "b",
                                            "command": [
                                                "sh",
                                                "-c",
                                                'printf "$*" > $(results.r.path)',
                                                "-",
                                            ],
                                            "args": ["$(params.all[*])"],
                                        }
                                    ],
                                },
                            },
                        ],
                    },
                }
            ],
        },
    )
    assert states(view) == {
        "a": "failed",
        "fc-m-0": "succeeded",
        "fc-m-1": "succeeded",
        "fc-join": "succeeded",
    }, view.tasks
    assert view.results["fc-join"] == {"r": "Failed-1 Failed-2"}


def test_a_childs_failure_stops_only_the_child_until_the_child_ends(tmp_path: Path) -> None:
    """As Tekton: a child run stops alone, the parent learns of its failure when the child
    run ends (after its finally). The child's finally here ends only once p2 has ended,
    so p2, ready once x has failed (p1 waits for it), starts: the parent is not stopping."""
    p2, x = "/tekton/run/p2/0/out", "/tekton/run/c-x/0/out.err"
    ended = f"until [ -e {p2} ] || [ -e {p2}.err ]; do sleep 0.1; done"
    _, view = run(
        tmp_path,
        {
            "tasks": [
                {
                    "name": "p1",
                    "taskSpec": {"steps": [sh(f"until [ -e {x} ]; do sleep 0.1; done")]},
                },
                {"name": "p2", "runAfter": ["p1"], "taskSpec": {"steps": [sh("true")]}},
                {
                    "name": "c",
                    "pipelineSpec": {
                        "tasks": [
                            {"name": "x", "taskSpec": {"steps": [sh("exit 1")]}},
                            {"name": "y", "runAfter": ["x"], "taskSpec": {"steps": [sh("true")]}},
                        ],
                        "finally": [
                            {
                                "name": "f",
                                "taskSpec": {"steps": [sh(ended)]},
                            }
                        ],
                    },
                },
                {"name": "after", "runAfter": ["c"], "taskSpec": {"steps": [sh("true")]}},
            ],
        },
    )
    assert states(view) == {
        "p1": "succeeded",
        "p2": "succeeded",
        "c-x": "failed",
        "c-y": "skipped",
        "c-f": "succeeded",
        "after": "skipped",
    }, view.tasks
