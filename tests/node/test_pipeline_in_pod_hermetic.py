"""Pre/post steps and hermetic execution on the real node (TEP-0080, TEP-0044's fences).

A server on this machine, bound on the Pod bridge's host address, serves a pre step
(fetch), is unreachable from the hermetic steps between (the attempt fails at once: their
network namespace has only a loopback, down, which sent nothing), and receives what the
post step publishes. A hermetic task cannot reach another task's server on the Pod's
localhost either, while a task that is not hermetic can. Where the runtime refuses the
namespaces, the run fails ``HermeticUnavailable`` before any step runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from customtask_sdk.client import CUSTOM_RUNS, JSON, Resource
from customtask_sdk.testing import condition, wait_for
from customtask_sdk.testing.node import Node
from examples.pipeline_in_pod.controller import PODS, custom_run
from examples.pipeline_in_pod.hermetic import EXECUTION_MODE, POST_STEPS, PRE_STEPS, UNAVAILABLE
from tests.node.test_pipeline_in_pod import done, pip  # noqa: F401 - the controller fixture

TASKS = Resource("tekton.dev", "v1", "tasks", "Task")


class Server:
    """A line server on the node's host address: records each line, answers ``fetch``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.host = ""
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        self.lines.append(line)
        if line == "fetch":
            writer.write(b"source-v1\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def server(node: Node) -> AsyncIterator[Server]:
    found = Server()
    listening = await asyncio.start_server(found.handle, node.network.host_ip, 0)
    found.host, found.port = listening.sockets[0].getsockname()[:2]
    async with listening:
        yield found


def sh(name: str, script: str, **fields: Any) -> JSON:
    return {"name": name, "image": "busybox", "script": script, **fields}


#: A Tekton Task (valid for Tekton's webhook): its first and last steps are pre and post
#: steps by annotation; it is made hermetic by the run's taskRunSpecs.
BUILD_TASK = {
    "apiVersion": "tekton.dev/v1",
    "kind": "Task",
    "metadata": {"name": "build", "annotations": {PRE_STEPS: "fetch", POST_STEPS: "publish"}},
    "spec": {
        "params": [{"name": "host"}, {"name": "port"}],
        "workspaces": [{"name": "src"}],
        "results": [{"name": "attempt"}, {"name": "local"}, {"name": "interfaces"}],
        "steps": [
            sh(
                "fetch",
                "printf 'fetch\\n' | nc -w 5 $(params.host) $(params.port)"
                " > $(workspaces.src.path)/source",
            ),
            sh(
                "build",
                "set +e\n"
                "printf 'leak\\n' | nc -w 5 $(params.host) $(params.port)"
                " > $(results.attempt.path) 2>&1\n"
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 8080"
                " > $(results.local.path) 2>&1\n"
                # Every interface and the packets it sent, after both attempts.
                "tail -n +3 /proc/net/dev | awk '{printf \"%s%s \", $1, $11}'"
                " > $(results.interfaces.path)\n"
                'printf "built-from-`cat $(workspaces.src.path)/source`"'
                " > $(workspaces.src.path)/artifact\n",
            ),
            sh(
                "publish",
                'printf "publish:`cat $(workspaces.src.path)/artifact`\\n"'
                " | nc -w 5 $(params.host) $(params.port)",
            ),
        ],
    },
}
#: A task serving on the Pod's localhost (a sidecar), and one that is not hermetic reading it.
OPEN_TASK = {
    "name": "open",
    "taskSpec": {
        "results": [{"name": "local"}],
        "sidecars": [
            sh(
                "server",
                "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
            )
        ],
        "steps": [
            sh(
                "read",
                "for i in 1 2 3 4 5 6 7 8 9 10; do"
                " printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 8080 | tail -n 1"
                " > $(results.local.path); [ -s $(results.local.path) ] && break; sleep 0.5; done",
            )
        ],
    },
}


def pipeline(server: Server) -> JSON:
    ref = {"name": "build", "taskRef": {"name": "build"}, "runAfter": ["open"]}
    return {
        "params": [{"name": "host"}, {"name": "port"}],
        "workspaces": [{"name": "src"}],
        "tasks": [
            OPEN_TASK,
            {
                **ref,
                "params": [
                    {"name": "host", "value": "$(params.host)"},
                    {"name": "port", "value": "$(params.port)"},
                ],
                "workspaces": [{"name": "src", "workspace": "src"}],
            },
        ],
        "results": [
            {"name": name, "value": f"$(tasks.build.results.{name})"}
            for name in ("attempt", "local", "interfaces")
        ]
        + [{"name": "open-local", "value": "$(tasks.open.results.local)"}],
    }


async def run(node: Node, namespace: str, spec: JSON) -> JSON:
    name = f"pip-{uuid.uuid4().hex[:6]}"
    await node.client.create(CUSTOM_RUNS.path(namespace), custom_run(name, spec))
    return await wait_for(node.client, CUSTOM_RUNS, namespace, name, done, timeout=180)


@pytest.mark.usefixtures("pip")
async def test_pre_step_fetches_hermetic_steps_reach_nothing_post_step_publishes(
    node: Node, node_namespace: str, server: Server
) -> None:
    await node.client.create(TASKS.path(node_namespace), BUILD_TASK)
    spec = {
        "pipelineSpec": pipeline(server),
        "host": server.host,
        "port": str(server.port),
        "taskRunSpecs": [
            {"pipelineTaskName": "build", "metadata": {"annotations": {EXECUTION_MODE: "hermetic"}}}
        ],
    }
    finished = await run(node, node_namespace, spec)

    assert (condition(finished) or {}).get("status") == "True", finished["status"]
    results = {r["name"]: r["value"] for r in finished["status"]["results"]}
    # The hermetic step's connects failed at once (no route: not a timeout), to this
    # machine and to the Pod's localhost alike; its namespace has only a loopback, which
    # sent no packet.
    assert results["attempt"] == (
        f"nc: can't connect to remote host ({server.host}): Network is unreachable\n"
    )
    assert results["local"] == (
        "nc: can't connect to remote host (127.0.0.1): Network is unreachable\n"
    )
    assert results["interfaces"] == "lo:0 "
    # The task that is not hermetic reached the same localhost server.
    assert results["open-local"] == "hello\n"
    # The pre step's fetch and the post step's publish arrived, nothing between: the
    # publish came after the hermetic step ended, so the leak had its chance.
    assert server.lines == ["fetch", "publish:built-from-source-v1"]
    steps = next(t for t in finished["status"]["extraFields"]["tasks"] if t["name"] == "build")
    assert [(s["name"], s.get("phase"), s.get("hermetic")) for s in steps["steps"]] == [
        ("fetch", "pre", None),
        ("build", None, True),
        ("publish", "post", None),
    ]


@pytest.mark.usefixtures("pip")
async def test_a_runtime_that_refuses_the_namespaces_fails_the_run_before_any_step(
    node: Node, node_namespace: str, server: Server
) -> None:
    # containerd's RuntimeDefault seccomp profile forbids new user namespaces.
    seccomp = {"seccompProfile": {"type": "RuntimeDefault"}}
    task = {
        "name": "t",
        "taskSpec": {
            "metadata": {"annotations": {EXECUTION_MODE: "hermetic"}},
            "preSteps": [sh("fetch", f"printf 'fetch\\n' | nc -w 5 {server.host} {server.port}")],
            "steps": [sh("build", "true", securityContext=seccomp)],
        },
    }
    finished = await run(node, node_namespace, {"pipelineSpec": {"tasks": [task]}})

    cond = condition(finished) or {}
    assert (cond.get("status"), cond.get("reason")) == ("False", UNAVAILABLE), cond
    assert "no step ran, none ran with the network instead" in cond["message"]
    assert '"seccompProfile": {"type": "RuntimeDefault"}' in cond["message"]
    name = finished["status"]["extraFields"]["pod"]
    pod = await wait_for(  # the Pod is over: the pre step never ran
        node.client, PODS, node_namespace, name, lambda p: p["status"].get("phase") == "Failed"
    )
    assert all("terminated" not in c["state"] for c in pod["status"]["containerStatuses"])
    assert server.lines == []
