"""One node per machine at a time: nodes of several processes take turns, a node whose
process was killed is cleaned up by the next one, and a second node in a process that
already runs one gives up with a clear message and leaves the first alone.

The tests that start nodes of their own come first: they need the machine to themselves,
before the session's ``node`` fixture starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from customtask_sdk.testing.node import Node, NodeError, lock_holder, processes_mentioning
from customtask_sdk.testing.processes import child_pids, has_exited
from customtask_sdk.testing.pytest_plugin import _located, _required
from customtask_sdk.testing.testbin import Binaries, NodeBinaries, locate, locate_node
from customtask_sdk.testing.waiting import condition

NODES = "/api/v1/nodes"

# A node in a process of its own: prints its folder once up (with a running Pod if asked),
# stops when a line arrives on stdin, then prints "stopped".
CHILD = """
import asyncio, sys
from customtask_sdk.client import Resource
from customtask_sdk.testing import wait_for
from customtask_sdk.testing.node import Node

PODS = Resource("", "v1", "pods", "Pod")

async def main() -> None:
    async with Node(tekton=False) as node:
        if sys.argv[1] == "with-pod":
            await node.wait_service_account("default")
            container = {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
            spec = {"containers": [container]}
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"}, "spec": spec}
            await node.client.create(PODS.path("default"), pod)
            running = lambda p: p.get("status", {}).get("phase") == "Running"
            await wait_for(node.client, PODS, "default", "sleeper", running, 120)
        print(node.workdir, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print("stopped", flush=True)

asyncio.run(main())
"""


@pytest.fixture
def binaries() -> tuple[Binaries, NodeBinaries]:
    if lock_holder() == os.getpid():
        reason = "this session already runs a node: these tests need the machine to themselves"
        if _required():  # in CI a skip would hide them
            pytest.fail(f"{reason} (tests/conftest.py runs them before the other node tests)")
        pytest.skip(f"{reason}; run this file on its own")
    found = _located(locate, "control plane")
    return found, _located(lambda: locate_node(found.versions), "node")


async def start_child(mode: str) -> tuple[asyncio.subprocess.Process, Path]:
    """A node in a process of its own (and its own session, like a CI job's), up."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        mode,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert child.stdout is not None
    line = (await asyncio.wait_for(child.stdout.readline(), 300)).decode().strip()
    assert line, f"the child's node did not start (exit code {await child.wait()})"
    return child, Path(line)


def host_state() -> dict[str, object]:
    """What a node changes on this machine: bridge, rules, cgroups, mounts, settings."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    return {
        "links": sorted(os.listdir("/sys/class/net")),
        "rules": {
            (binary, table): run(binary, "-w", "-t", table, "-S")
            for binary in ("iptables", "ip6tables")
            for table in ("filter", "nat", "mangle")
        },
        "cgroups": sorted(str(path) for path in Path("/sys/fs/cgroup").glob("*/kubepods")),
        "mounts": [
            line
            for line in run("findmnt", "-rn", "-o", "TARGET").splitlines()
            if "customtask-node-" in line or line.startswith("/run/netns/")
        ],
        "sysctls": {
            name: Path("/proc/sys", name).read_text()
            for name in ("net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding")
        },
    }


class LogSeen(logging.Handler):
    """Sets :attr:`seen` once a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def assert_ready(node: Node) -> None:
    ready = condition(await node.client.get(f"{NODES}/{node.name}"), "Ready")
    assert ready is not None
    assert ready["status"] == "True"


async def test_node_starts_after_one_killed_and_leaves_the_machine_clean(
    binaries: tuple[Binaries, NodeBinaries],
) -> None:
    before = host_state()
    child, dead_workdir = await start_child("with-pod")
    # As a CI timeout does: the job's process group and the processes it started, but for
    # CoreDNS, which outlives the job (each component runs in a session of its own).
    components = child_pids(child.pid)
    (survivor,) = processes_mentioning(f"{dead_workdir}/coredns/Corefile")
    os.killpg(child.pid, signal.SIGKILL)
    for pid in components:
        if pid != survivor:
            os.kill(pid, signal.SIGKILL)
    await child.wait()
    assert host_state() != before  # bridge, rules, mounts, cgroups left behind
    assert not has_exited(survivor)

    async with Node(*binaries, tekton=False) as node:
        await assert_ready(node)
        assert not dead_workdir.exists()
        assert processes_mentioning(f"{dead_workdir}/") == set()
        assert has_exited(survivor)

    assert host_state() == before
    assert lock_holder() is None


async def test_nodes_of_two_processes_take_turns(binaries: tuple[Binaries, NodeBinaries]) -> None:
    child, _ = await start_child("idle")
    assert child.stdin is not None
    assert child.stdout is not None
    logger = logging.getLogger("customtask_sdk.testing.node")
    waiting = LogSeen(f"node of process {child.pid}")
    logger.addHandler(waiting)
    logger.setLevel(logging.INFO)
    second = Node(*binaries, tekton=False)
    starting = asyncio.create_task(second.start())
    try:
        # The barrier: the second node says it waits for the first one's process.
        await asyncio.wait_for(waiting.seen.wait(), 60)
        child.stdin.write(b"stop\n")
        assert await child.stdout.readline() == b"stopped\n"
        await starting
        assert lock_holder() == os.getpid()
        await assert_ready(second)
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await second.stop()
        logger.removeHandler(waiting)
        logger.setLevel(logging.NOTSET)
        if child.returncode is None and not child.stdin.is_closing():
            child.stdin.write(b"stop\n")
    assert await child.wait() == 0


async def test_second_node_gives_up_after_its_timeout_and_leaves_the_first_running(
    node: Node,
) -> None:
    second = Node(node.binaries, node.node_binaries, lock_timeout=0.5)

    with pytest.raises(NodeError, match=f"process {os.getpid()} holds"):
        async with second:
            pass

    assert (Path("/sys/class/net") / node.network.bridge).exists()
    assert not second.workdir.exists()
    await assert_ready(node)
