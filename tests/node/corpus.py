"""The differential corpus: pipelines run both by Tekton's own PipelineRun controller and
by Pipeline-in-Pod (either front door), with the harness that reads a PipelineRun's outcome,
per-task states and results the way Tekton reports them (``childReferences`` and their
TaskRuns, ``skippedTasks``, ``results``)."""

from __future__ import annotations

import uuid
from typing import Any

from customtask_sdk.client import CUSTOM_RUNS, JSON, PIPELINE_RUNS, TASK_RUNS, KubeClient
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.node import Node
from examples.pipeline_in_pod.compiler import Images

__all__ = [
    "CORPUS",
    "NESTED_CORPUS",
    "done",
    "images",
    "outcome",
    "pipeline_run",
    "producer",
    "result",
    "sh",
    "t",
    "tekton_run",
    "uses",
]


def sh(script: str, **fields: Any) -> JSON:
    return {"image": "busybox", "script": script, **fields}


def t(name: str, *steps: JSON, **fields: Any) -> JSON:
    spec: JSON = {"steps": list(steps) or [sh("true")]}
    spec.update(fields.pop("spec", {}))
    return {"name": name, "taskSpec": spec, **fields}


def producer(name: str, value: str, **fields: Any) -> JSON:
    spec = {"results": [{"name": "out"}], **fields.pop("spec", {})}
    return t(name, sh(f"printf '{value}' > $(results.out.path)"), spec=spec, **fields)


def uses(name: str, source: str, **fields: Any) -> JSON:
    return t(
        name,
        sh('printf "got-$(params.v)" > $(results.out.path)'),
        params=[{"name": "v", "value": f"$(tasks.{source}.results.out)"}],
        spec={"params": [{"name": "v"}], "results": [{"name": "out"}]},
        **fields,
    )


def result(task: str) -> JSON:
    return {"name": f"r-{task}", "value": f"$(tasks.{task}.results.out)"}


#: The corpus: name -> pipelineSpec. Each is run by Tekton and by Pipeline-in-Pod.
CORPUS: dict[str, JSON] = {
    "one-task": {"tasks": [producer("a", "x")], "results": [result("a")]},
    "sequential-3": {
        "tasks": [producer("a", "1"), uses("b", "a"), uses("c", "b")],
        "results": [result("c")],
    },
    "run-after": {"tasks": [t("a"), t("b", runAfter=["a"]), t("c", runAfter=["b"])]},
    "parallel-5": {
        "tasks": [producer(f"p{i}", str(i)) for i in range(5)],
        "results": [result("p3")],
    },
    "fan-out-fan-in": {
        "tasks": [
            producer("root", "r"),
            uses("left", "root"),
            uses("right", "root"),
            t(
                "join",
                sh('printf "$(params.l)+$(params.r)" > $(results.out.path)'),
                params=[
                    {"name": "l", "value": "$(tasks.left.results.out)"},
                    {"name": "r", "value": "$(tasks.right.results.out)"},
                ],
                spec={"params": [{"name": "l"}, {"name": "r"}], "results": [{"name": "out"}]},
            ),
        ],
        "results": [result("join")],
    },
    "params-string-array-object": {
        "params": [
            {"name": "s", "default": "str"},
            {"name": "a", "type": "array", "default": ["x", "y"]},
            {"name": "o", "type": "object", "properties": {"k": {}}, "default": {"k": "v"}},
        ],
        "tasks": [
            t(
                "p",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "%s " "$@" > $(results.out.path)', "--"],
                    "args": ["$(params.s)", "$(params.a[*])", "$(params.o.k)", "$(params.a[1])"],
                },
                spec={"results": [{"name": "out"}]},
            )
        ],
        "results": [result("p")],
    },
    # Tekton substitutes results in params and when only: they come through params.
    "result-in-args-and-env": {
        "tasks": [
            producer("a", "val"),
            t(
                "b",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "$1-$E" > $(results.out.path)', "--"],
                    "args": ["$(params.v)"],
                    "env": [{"name": "E", "value": "$(params.v)"}],
                },
                params=[{"name": "v", "value": "$(tasks.a.results.out)"}],
                spec={"params": [{"name": "v"}], "results": [{"name": "out"}]},
            ),
        ],
        "results": [result("b")],
    },
    "array-result": {
        "tasks": [
            t(
                "a",
                sh('printf \'["p","q"]\' > $(results.out.path)'),
                spec={"results": [{"name": "out", "type": "array"}]},
            ),
            t(
                "b",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "%s," "$@" > $(results.out.path)', "--"],
                    "args": ["$(params.v[*])"],
                },
                params=[{"name": "v", "value": ["$(tasks.a.results.out[*])"]}],
                spec={
                    "params": [{"name": "v", "type": "array"}],
                    "results": [{"name": "out"}],
                },
            ),
        ],
        "results": [result("b")],
    },
    "fails": {"tasks": [t("a", sh("exit 2"))]},
    "failure-skips-dependants": {
        "tasks": [t("a", sh("exit 1")), t("b", runAfter=["a"]), t("c", runAfter=["b"])]
    },
    "finally-after-success": {
        "tasks": [producer("a", "x")],
        "finally": [
            t(
                "f",
                sh('printf "$(params.s)" > $(results.out.path)'),
                params=[{"name": "s", "value": "$(tasks.status)"}],
                spec={"params": [{"name": "s"}], "results": [{"name": "out"}]},
            )
        ],
        "results": [{"name": "r-f", "value": "$(finally.f.results.out)"}],
    },
    "finally-after-failure": {
        "tasks": [t("a", sh("exit 1")), t("b", runAfter=["a"])],
        "finally": [
            t(
                "f",
                sh('printf "$(params.s)/$(params.a)/$(params.b)" > $(results.out.path)'),
                params=[
                    {"name": "s", "value": "$(tasks.status)"},
                    {"name": "a", "value": "$(tasks.a.status)"},
                    {"name": "b", "value": "$(tasks.b.status)"},
                ],
                spec={
                    "params": [{"name": "s"}, {"name": "a"}, {"name": "b"}],
                    "results": [{"name": "out"}],
                },
            )
        ],
        "results": [{"name": "r-f", "value": "$(finally.f.results.out)"}],
    },
    "finally-fails": {"tasks": [t("a")], "finally": [t("f", sh("exit 1"))]},
    "when-param-false": {
        "params": [{"name": "go", "default": "no"}],
        "tasks": [
            t("a", when=[{"input": "$(params.go)", "operator": "in", "values": ["yes"]}]),
            t("b", runAfter=["a"]),
        ],
    },
    "when-param-true": {
        "params": [{"name": "go", "default": "yes"}],
        "tasks": [
            producer(
                "a", "ran", when=[{"input": "$(params.go)", "operator": "in", "values": ["yes"]}]
            )
        ],
        "results": [result("a")],
    },
    "when-result": {
        "tasks": [
            producer("decide", "no"),
            t(
                "skipme",
                when=[
                    {"input": "$(tasks.decide.results.out)", "operator": "in", "values": ["yes"]}
                ],
            ),
            producer(
                "runme",
                "ran",
                when=[
                    {"input": "$(tasks.decide.results.out)", "operator": "notin", "values": ["yes"]}
                ],
            ),
        ],
        "results": [result("runme")],
    },
    "on-error-continue": {
        "tasks": [
            t(
                "a",
                sh("exit 3", onError="continue"),
                sh("printf after > $(results.out.path)"),
                spec={"results": [{"name": "out"}]},
            )
        ],
        "results": [result("a")],
    },
    "step-timeout": {"tasks": [t("a", sh("sleep 60", timeout="2s"))]},
    "workspace-shared": {
        "workspaces": [{"name": "ws"}],
        "tasks": [
            t(
                "w",
                sh("echo data > $(workspaces.d.path)/f"),
                spec={"workspaces": [{"name": "d"}]},
                workspaces=[{"name": "d", "workspace": "ws"}],
            ),
            t(
                "r",
                sh("printf $(cat $(workspaces.d.path)/f) > $(results.out.path)"),
                runAfter=["w"],
                spec={"workspaces": [{"name": "d"}], "results": [{"name": "out"}]},
                workspaces=[{"name": "d", "workspace": "ws"}],
            ),
        ],
        "results": [result("r")],
    },
    "step-template-and-workdir": {
        "tasks": [
            t(
                "a",
                {"script": 'printf "$(pwd):$V" > $(results.out.path)', "workingDir": "/w/d"},
                spec={
                    "stepTemplate": {"image": "busybox", "env": [{"name": "V", "value": "tmpl"}]},
                    "results": [{"name": "out"}],
                },
            )
        ],
        "results": [result("a")],
    },
    "sidecar": {
        "tasks": [
            producer(
                "a",
                "x",
                spec={
                    "sidecars": [
                        {
                            "name": "helper",
                            "image": "busybox",
                            "command": [
                                "sh",
                                "-c",
                                "trap 'exit 0' TERM; while true; do sleep 1; done",
                            ],
                        }
                    ],
                },
            )
        ],
        "results": [result("a")],
    },
    "when-result-skips-users": {
        "tasks": [
            producer("decide", "no"),
            producer(
                "maybe",
                "made",
                when=[
                    {"input": "$(tasks.decide.results.out)", "operator": "in", "values": ["yes"]}
                ],
            ),
            uses("user", "maybe"),
            t("after", runAfter=["maybe"]),
        ],
        "finally": [
            t(
                "f",
                sh('printf "$(params.m)" > $(results.out.path)'),
                params=[{"name": "m", "value": "$(tasks.maybe.status)"}],
                spec={"params": [{"name": "m"}], "results": [{"name": "out"}]},
            )
        ],
        "results": [{"name": "r-f", "value": "$(finally.f.results.out)"}],
    },
    "step-results": {
        "tasks": [
            t(
                "a",
                sh("printf hi > $(step.results.w.path)", name="make", results=[{"name": "w"}]),
                {
                    "name": "use",
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "$1" > $(results.out.path)', "--"],
                    "args": ["$(steps.make.results.w)"],
                },
                spec={"results": [{"name": "out"}]},
            )
        ],
        "results": [result("a")],
    },
    "context": {
        "tasks": [
            t(
                "a",
                sh("printf '$(params.r)' > $(results.out.path)"),
                params=[{"name": "r", "value": "$(context.pipelineTask.retries)"}],
                spec={"params": [{"name": "r"}], "results": [{"name": "out"}]},
            )
        ],
        "results": [result("a")],
    },
    # Tekton aggregates a matrix's string results into arrays, in TaskRun-name order
    # (m-10 before m-2), leaving out instances without the result (m-3).
    "matrix-results": {
        "tasks": [
            t(
                "m",
                sh(
                    'if [ "$(params.n)" != 3 ]; then '
                    "printf 'v$(params.n)-$(params.x)' > $(results.out.path); fi",
                    # 11 Pods starting at once would each pull busybox:latest, past the
                    # kubelet's pull rate (5/s, burst 10): Tekton's TaskRun then fails.
                    imagePullPolicy="IfNotPresent",
                ),
                matrix={
                    "params": [{"name": "n", "value": [str(i) for i in range(11)]}],
                    "include": [{"name": "x", "params": [{"name": "x", "value": "i"}]}],
                },
                spec={"params": [{"name": "n"}, {"name": "x"}], "results": [{"name": "out"}]},
            ),
            t(
                "use",
                {
                    "image": "busybox",
                    "command": ["sh", "-c", 'printf "%s," "$@" > $(results.out.path)', "--"],
                    "args": ["$(params.all[*])", "$(params.count)", "$(params.made)"],
                },
                runAfter=["m"],
                params=[
                    {"name": "all", "value": "$(tasks.m.results.out[*])"},
                    {"name": "count", "value": "$(tasks.m.matrix.length)"},
                    {"name": "made", "value": "$(tasks.m.matrix.out.length)"},
                ],
                spec={
                    "params": [
                        {"name": "all", "type": "array"},
                        {"name": "count"},
                        {"name": "made"},
                    ],
                    "results": [{"name": "out"}],
                },
            ),
        ],
        # (A pipeline result of $(tasks.m.results.out[*]) is published here as documented;
        # Tekton v1.15.1 fails such a PipelineRun, CouldntGetPipelineResult: its results
        # cache of a matrix is only filled when a later task reads it in that reconcile.)
        "results": [result("use")],
    },
    "matrix-in-finally": {
        "tasks": [producer("a", "x")],
        "finally": [
            t(
                "f",
                sh("printf '$(params.p)-$(params.a)' > $(results.out.path)"),
                params=[{"name": "a", "value": "$(tasks.a.results.out)"}],
                matrix={"params": [{"name": "p", "value": ["1", "2", "3"]}]},
                spec={"params": [{"name": "p"}, {"name": "a"}], "results": [{"name": "out"}]},
            )
        ],
    },
    "matrix-failure": {
        "tasks": [
            t(
                "m",
                sh("exit $(params.code)"),
                matrix={"params": [{"name": "code", "value": ["0", "1"]}]},
                spec={"params": [{"name": "code"}]},
            ),
            t("after", runAfter=["m"]),
        ],
    },
}


def _child(name: str, tasks: list[JSON], **fields: Any) -> JSON:
    """Child pipeline task ``name`` (Tekton: alpha). Types spelled out: without Tekton's
    webhook nothing defaults a child's spec."""
    spec = {"tasks": tasks, **fields.pop("spec", {})}
    return {"name": name, "pipelineSpec": spec, **fields}


def _expects(name: str, statuses: str, expected: str) -> JSON:
    """Task ``name``, failing unless ``statuses`` (``$(tasks...status)``: Tekton replaces
    them in params and ``when`` only) read ``expected``."""
    return _given(name, statuses, sh(f'test "$(params.s)" = "{expected}"'))


def _given(name: str, value: str, step: JSON, **spec: Any) -> JSON:
    """Task ``name`` running ``step`` with param ``s`` set to ``value``."""
    params = {"params": [{"name": "s", "type": "string"}], **spec}
    return t(name, step, params=[{"name": "s", "value": value}], spec=params)


def _report(statuses: str) -> JSON:
    return _given("report", statuses, sh('printf "$(params.s)" > $(results.out.path)'), **_OUT)


_OUT = {"results": [{"name": "out", "type": "string"}]}


def _with_finally(code: str, seen: str) -> JSON:
    """Child ``c`` after ``a``: x exits ``code``, y after x; its finally checks that it
    saw ``seen`` as its statuses (it fails otherwise)."""
    return _child(
        "c",
        [t("x", sh(f"exit {code}")), t("y", runAfter=["x"])],
        runAfter=["a"],
        spec={
            "finally": [_expects("f", "$(tasks.status) $(tasks.x.status) $(tasks.y.status)", seen)]
        },
    )


#: Pipelines in Pipelines (Tekton: alpha, so run apart from :data:`CORPUS`).
NESTED_CORPUS: dict[str, JSON] = {
    # A child reading a result of the parent, its tasks passing a result, a task after it.
    "child": {
        "params": [{"name": "greeting", "default": "hi"}],
        "tasks": [
            producer("a", "from-a"),
            _child(
                "c",
                [
                    producer("x", "$(params.word)-$(context.pipelineRun.name)"),
                    t(
                        "y",
                        sh('printf "got-$(params.v)" > $(results.out.path)'),
                        params=[{"name": "v", "value": "$(tasks.x.results.out)"}],
                        spec={"params": [{"name": "v", "type": "string"}], **_OUT},
                    ),
                ],
                params=[{"name": "word", "value": "$(tasks.a.results.out)-$(params.greeting)"}],
                spec={"params": [{"name": "word", "type": "string"}]},
            ),
            producer("after", "z", runAfter=["c"]),
        ],
        "results": [result("after")],
    },
    # The child's finally runs after the child's tasks, sees the child's statuses; the
    # child's outcome is what the parent's dependants and finally see.
    "child-finally-after-failure": {
        "tasks": [t("a"), _with_finally("3", "Failed Failed None"), t("after", runAfter=["c"])],
        "finally": [_report("$(tasks.status) $(tasks.c.status)")],
        "results": [{"name": "r-report", "value": "$(finally.report.results.out)"}],
    },
    "child-finally-after-success": {
        "tasks": [
            t("a"),
            _with_finally("0", "Succeeded Succeeded Succeeded"),
            t("after", runAfter=["c"]),
        ],
        "finally": [_report("$(tasks.status) $(tasks.c.status)")],
        "results": [{"name": "r-report", "value": "$(finally.report.results.out)"}],
    },
    # A child in finally runs after the parent's tasks, its tasks in order.
    "child-in-finally": {
        "tasks": [t("a", sh("exit 1"))],
        "finally": [
            _child(
                "fc",
                [
                    t("x", sh('printf "$(params.s)" > $(results.out.path)'), spec=_OUT),
                    _expects("y", "$(tasks.x.results.out)", "Failed"),
                ],
                params=[{"name": "s", "value": "$(tasks.a.status)"}],
                spec={"params": [{"name": "s", "type": "string"}]},
            )
        ],
    },
    # A matrix inside a child fans out over the child's param; its results aggregated.
    "matrix-in-child": {
        "tasks": [
            _child(
                "c",
                [
                    t(
                        "m",
                        sh('printf "n$(params.n)" > $(results.out.path)'),
                        matrix={"params": [{"name": "n", "value": "$(params.ns[*])"}]},
                        spec={"params": [{"name": "n", "type": "string"}], **_OUT},
                    ),
                    t(
                        "z",
                        {
                            "image": "busybox",
                            "command": ["sh", "-c", 'test "$*" = "n1 n2 n3"', "-"],
                            "args": ["$(params.all[*])"],
                        },
                        params=[{"name": "all", "value": "$(tasks.m.results.out[*])"}],
                        spec={"params": [{"name": "all", "type": "array"}]},
                    ),
                ],
                params=[{"name": "ns", "value": ["1", "2", "3"]}],
                spec={"params": [{"name": "ns", "type": "array"}]},
            ),
            t("after", runAfter=["c"]),
        ],
    },
}


def done(obj: JSON) -> bool:
    found = condition(obj)
    return found is not None and found.get("status") in ("True", "False")


def images(node: Node) -> Images:
    """Pipeline-in-Pod's helper images, as the node serves them."""
    return Images.served(node.tekton_images)


def pipeline_run(name: str, spec: JSON, managed_by: str | None = None, **fields: Any) -> JSON:
    """A PipelineRun of ``spec``. Tekton's tasks share a workspace across Pods through a
    volume: a claim per run (the node provisions hostPath volumes); one Pod (``managed_by``
    set) shares an emptyDir."""
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}
    bound = [
        {
            "name": ws["name"],
            **({"emptyDir": {}} if managed_by else {"volumeClaimTemplate": {"spec": claim}}),
        }
        for ws in spec.get("workspaces") or []
    ]
    body: JSON = {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": spec, "workspaces": bound, **fields},
    }
    if managed_by is not None:
        body["spec"]["managedBy"] = managed_by
    return body


async def tekton_run(
    kube: KubeClient, namespace: str, spec: JSON, managed_by: str | None = None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Run ``spec`` as a PipelineRun (by Tekton, or by ``managed_by``): outcome, per-task
    states, results."""
    name = f"pr-{uuid.uuid4().hex[:6]}"
    await kube.create(PIPELINE_RUNS.path(namespace), pipeline_run(name, spec, managed_by))
    run = await wait_for(kube, PIPELINE_RUNS, namespace, name, done, timeout=180)
    return await outcome(kube, namespace, run)


def _skipped(status: JSON) -> list[str]:
    """The tasks a PipelineRun's status says it skipped. Tekton v1.15.1 counts a child
    pipeline task as never scheduled (``isScheduled`` looks at TaskRuns and CustomRuns
    only), so once the run is stopping, a child that ran (and failed) is listed too
    (PipelineRunStopping): left out, its own tasks count instead."""
    refs = status.get("childReferences") or []
    ran = {c["pipelineTaskName"] for c in refs if c.get("kind") == "PipelineRun"}
    return [s["name"] for s in status.get("skippedTasks") or [] if s["name"] not in ran]


async def outcome(
    kube: KubeClient, namespace: str, run: JSON
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A finished PipelineRun's outcome, per-task states and results, as Tekton shows them
    (its TaskRuns' and CustomRuns' conditions, ``skippedTasks``, ``results``)."""
    states: dict[str, str] = {}
    children = list(run["status"].get("childReferences") or [])
    for child in children:
        if child.get("kind") == "PipelineRun":  # a child pipeline's: its TaskRuns count
            inner = await wait_for(kube, PIPELINE_RUNS, namespace, child["name"], done)
            children += inner["status"].get("childReferences") or []
            prefix = child["name"].removeprefix(f"{run['metadata']['name']}-")
            for skipped in _skipped(inner["status"]):
                states[f"{prefix}-{skipped}"] = "skipped"
            continue
        kind = CUSTOM_RUNS if child.get("kind") == "CustomRun" else TASK_RUNS
        cond = condition(await kube.get(kind.path(namespace, child["name"]))) or {}
        task = child["name"].removeprefix(f"{run['metadata']['name']}-")  # a matrix's: <task>-<i>
        if cond.get("status") == "True":
            states[task] = "succeeded"
        elif cond.get("reason") in ("TaskRunTimeout", "CustomRunTimedOut"):
            states[task] = "timedOut"
        elif cond.get("reason") in ("TaskRunCancelled", "CustomRunCancelled"):
            states[task] = "cancelled"
        else:
            states[task] = "failed"
    for skipped in _skipped(run["status"]):
        states[skipped] = "skipped"
    results = {r["name"]: r["value"] for r in run["status"].get("results") or []}
    return (condition(run) or {}).get("status", ""), states, results
