"""Controller CPU and throughput of this tree against another revision, paired.

    .venv/bin/python bench/compare.py c11d590 [--trials 4] [--runs 2000]

Checks out ``REV`` into a temporary git worktree, then on one control plane drains
``--runs`` pre-created instant Waits with each tree's ``customtask-sdk run
examples.wait.controller:Wait --workers 32`` (``bench.drain``: timed net of idle start-up),
alternating which goes first, after one warm-up round. Prints each trial and the medians;
asserts nothing. On a shared 2-core machine a single trial moves by +-20%: compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import ROOT, Launch, drain
from customtask_sdk.testing import ControlPlane
from customtask_sdk.testing.processes import ManagedProcess, free_port


def launcher(cp: ControlPlane, tree: Path, tag: str) -> Launch:
    def launch(namespace: str) -> ManagedProcess:
        argv = [
            sys.executable,
            "-m",
            "customtask_sdk.cli",
            "run",
            "examples.wait.controller:Wait",
            f"--kubeconfig={cp.kubeconfig}",
            f"--health-port={free_port()}",
            f"--namespace={namespace}",
            f"--app-dir={tree}",
            "--workers=32",
            "--no-events",
            "--log-level=WARNING",
        ]
        env = dict(os.environ, PYTHONPATH=str(tree))  # the tree's own customtask_sdk first
        return ManagedProcess(f"{tag}-{namespace}", argv, cp.log_dir, env=env, cwd=tree)

    return launch


async def compare(trees: dict[str, Path], trials: int, runs: int) -> None:
    results: dict[str, list[dict[str, float]]] = {tag: [] for tag in trees}
    async with ControlPlane() as cp:
        for trial in range(trials + 1):  # trial 0 warms up
            order = list(trees.items())
            for tag, tree in order if trial % 2 == 0 else reversed(order):
                figures = await drain(cp, f"{tag}-{trial}", launcher(cp, tree, tag), runs)
                print(tag, trial, {k: round(v, 3) for k, v in figures.items()}, flush=True)
                if trial:
                    results[tag].append(figures)
    for tag, measured in results.items():
        cpu = statistics.median(f["cpu_ms_per_run"] for f in measured)
        rate = statistics.median(f["runs_per_s"] for f in measured)
        print(f"{tag}: median {cpu:.3f} ms CPU/run, {rate:.0f} runs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the revision to compare with (e.g. the last release)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(base), args.rev], check=True
        )
        try:
            print(f"base: {args.rev}; head: this tree")
            asyncio.run(compare({"base": base, "head": ROOT}, args.trials, args.runs))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], check=True)


if __name__ == "__main__":
    main()
