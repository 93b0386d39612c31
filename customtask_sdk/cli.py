"""The ``customtask-sdk`` command: build test binaries, run a local dev environment."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _testbin_install(args: argparse.Namespace) -> int:
    from customtask_sdk.testing import testbin

    started = time.monotonic()
    binaries = testbin.install(log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"control-plane binaries ready in {time.monotonic() - started:.1f}s:")
    for field in ("etcd", "kube_apiserver", "kube_controller_manager", "tekton_controller"):
        print(f"  {field}: {getattr(binaries, field)}")
    print(f"  tekton_entrypoint: {binaries.tekton_entrypoint}")
    print(f"  tekton_config: {binaries.tekton_config}")
    return 0


def _dev_up(args: argparse.Namespace) -> int:
    from customtask_sdk.testing.devenv import run_dev

    manifests = [Path(p) for p in args.filename]
    try:
        ok = asyncio.run(
            run_dev(
                manifests,
                sys.stdout,
                namespace=args.namespace,
                timeout=args.timeout,
                keep_running=args.keep_running,
            )
        )
    except KeyboardInterrupt:
        return 130
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="customtask-sdk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    testbin = commands.add_parser("testbin", help="control-plane binaries for tests")
    testbin_commands = testbin.add_subparsers(dest="testbin_command", required=True)
    install = testbin_commands.add_parser(
        "install", help="build etcd, kube-apiserver, Tekton... at pinned versions (cached)"
    )
    install.set_defaults(handler=_testbin_install)

    dev = commands.add_parser("dev", help="a local control plane for development")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_commands.add_parser(
        "up", help="start etcd, kube-apiserver and Tekton's controller; apply and follow runs"
    )
    up.add_argument("-f", "--filename", action="append", default=[], help="manifest to apply")
    up.add_argument("-n", "--namespace", default="default")
    up.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to follow the PipelineRuns"
    )
    up.add_argument(
        "--keep-running", action="store_true", help="keep the control plane up until Ctrl-C"
    )
    up.set_defaults(handler=_dev_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``customtask-sdk`` command."""
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
