"""The customtask-sdk command: loading reconcilers and reporting mistakes plainly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from customtask_sdk.cli import load_reconciler, main
from customtask_sdk.testing.processes import kill_leftovers
from examples.wait.controller import Wait

ROOT = Path(__file__).resolve().parents[2]


def test_loads_a_reconciler_class_as_an_instance() -> None:
    assert isinstance(load_reconciler("examples.wait.controller:Wait"), Wait)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.wait.controller", "expected pkg.module:Class"),
        ("no.such.module:Thing", "cannot import 'no.such.module'"),
        ("examples.wait.controller:Nope", "has no 'Nope'"),
        ("examples.wait.controller:WaitParams", "neither a Reconciler subclass nor"),
    ],
)
def test_mistakes_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        load_reconciler(spec)


@pytest.mark.usefixtures("restore_logging")
def test_leader_timings_that_could_leave_two_leaders_are_a_one_line_error() -> None:
    args = ["run", "examples.wait.controller:Wait", "--kubeconfig", "/nonexistent"]
    timings = ["--leader-elect", "--lease-duration", "3", "--renew-deadline", "5"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, *timings])
    assert "renew_deadline" in str(exit_.value.code)


@pytest.mark.usefixtures("restore_logging")
def test_a_missing_kubeconfig_is_reported_without_a_traceback() -> None:
    with pytest.raises(SystemExit, match="kubeconfig not found: /nonexistent"):
        main(["run", "examples.wait.controller:Wait", "--kubeconfig", "/nonexistent"])


def _wait_for_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"exited early ({proc.wait()}): {proc.stderr.read() if proc.stderr else ''}"
    return line


_SLEEPER = """
import asyncio, sys
from pathlib import Path
from customtask_sdk.cli import run_until_signalled
from customtask_sdk.testing.processes import ManagedProcess

async def main() -> int:
    child = ManagedProcess("sleeper", ["sleep", "300"], Path(sys.argv[1]))
    await child.start()
    print(child.pid, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await child.stop()
    return 0

sys.exit(run_until_signalled(main()))  # exits with 128 + signal when one stops it
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_command_and_the_processes_it_started(
    sig: signal.Signals, tmp_path: Path
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _SLEEPER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        child = int(_wait_for_line(proc))
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    assert not kill_leftovers([child])
    assert code == 128 + sig


def test_testbin_install_stops_its_build_on_sigterm(tmp_path: Path) -> None:
    fake_go = tmp_path / "bin" / "go"
    fake_go.parent.mkdir()
    fake_go.write_text(f"#!/bin/sh\necho $$ >> {tmp_path}/go.pids\nexec sleep 300\n")
    fake_go.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake_go.parent}{os.pathsep}{os.environ['PATH']}",
        "CUSTOMTASK_SDK_CACHE": str(tmp_path / "cache"),
    }
    env.pop("KUBEBUILDER_ASSETS", None)
    argv = [sys.executable, "-m", "customtask_sdk.cli", "testbin", "install"]
    with subprocess.Popen(argv, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True) as proc:
        pids = tmp_path / "go.pids"
        while not pids.exists() and proc.poll() is None:  # a file has no event to wait on
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    (go,) = [int(pid) for pid in pids.read_text().split()]
    assert not kill_leftovers([go])
    assert code == 128 + signal.SIGTERM
