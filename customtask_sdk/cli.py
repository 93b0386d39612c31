"""The ``customtask-sdk`` command: run reconcilers, build test binaries, a local dev environment."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from customtask_sdk.client import ConfigurationError, KubeClient
from customtask_sdk.reconciler import Reconciler
from customtask_sdk.reconciler.objects import ObjectReconciler
from customtask_sdk.runtime import LeaderElection, Manager, configure_logging

__all__ = ["load_reconciler", "main", "run_until_signalled"]

T = TypeVar("T")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_signalled(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` in a new event loop; SIGTERM or SIGINT cancels it, so its cleanup
    (stopping every process it started) runs before the command exits.

    Returns ``main``'s result. Stopped by a signal, it exits (``SystemExit``) with
    ``128 + signal``, the shell's convention. Signals received while ``main`` cleans up
    are ignored: cleanup is never cut short.
    """

    async def supervise() -> T:
        task = asyncio.ensure_future(main)
        received: list[int] = []

        def stop(sig: signal.Signals) -> None:
            if not received:
                print(f"{sig.name}: stopping", file=sys.stderr, flush=True)
                task.cancel()
            received.append(sig)

        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await task
        except asyncio.CancelledError:
            if not received:
                raise
            raise SystemExit(128 + received[0]) from None
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    return asyncio.run(supervise())


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _testbin_install(args: argparse.Namespace) -> int:
    from customtask_sdk.testing import testbin

    started = time.monotonic()
    for sig in _STOP_SIGNALS:  # exiting unwinds the build step, which kills its `go`
        signal.signal(sig, _exit_on_signal)
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
    sys.path.insert(0, args.app_dir)
    reconcilers = [load_reconciler(spec) for spec in args.controller]
    ok = run_until_signalled(
        run_dev(
            manifests,
            sys.stdout,
            reconcilers=reconcilers,
            namespace=args.namespace,
            timeout=args.timeout,
            keep_running=args.keep_running,
            node=args.node,
        )
    )
    return 0 if ok else 1


def load_reconciler(spec: str) -> Reconciler[Any] | ObjectReconciler:
    """Import ``pkg.module:Name``: a Reconciler or ObjectReconciler subclass (instantiated)
    or instance."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"expected pkg.module:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(
            f"cannot import {module_name!r} ({exc}); run from the folder that contains it "
            "or pass --app-dir"
        ) from None
    target = getattr(module, attribute, None)
    if target is None:
        raise SystemExit(f"{module_name!r} has no {attribute!r}")
    if isinstance(target, type) and issubclass(target, Reconciler | ObjectReconciler):
        return target()
    if isinstance(target, Reconciler | ObjectReconciler):
        return target
    raise SystemExit(f"{spec} is neither a Reconciler subclass nor a Reconciler instance")


async def _run_manager(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.app_dir)
    reconcilers = [load_reconciler(spec) for spec in args.reconcilers]
    election = None
    if args.leader_elect:
        kinds = (r.kind if isinstance(r, Reconciler) else r.resource.kind for r in reconcilers)
        name = args.lease_name or "customtask-" + "-".join(k.lower() for k in kinds)
        try:
            election = LeaderElection(
                name,
                namespace=args.lease_namespace,
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            )
        except ValueError as exc:  # timings that could leave two leaders
            raise SystemExit(f"customtask-sdk: {exc}") from None
    client = await KubeClient.from_kubeconfig(args.kubeconfig, args.context)
    manager = Manager(
        client,
        reconcilers,
        namespace=args.namespace,
        workers=args.workers,
        leader_election=election,
        health_port=args.health_port,
        events=not args.no_events,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await manager.run(stop)
    finally:
        await client.close()


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, args.log_level)
    try:
        asyncio.run(_run_manager(args))
    except ConfigurationError as exc:
        raise SystemExit(f"customtask-sdk: {exc}") from None
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="customtask-sdk", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    testbin = commands.add_parser("testbin", help="control-plane binaries for tests")
    testbin_commands = testbin.add_subparsers(dest="testbin_command", required=True)
    install = testbin_commands.add_parser(
        "install", help="build etcd, kube-apiserver, Tekton... at pinned versions (cached)"
    )
    install.set_defaults(handler=_testbin_install)

    run = commands.add_parser("run", help="run one or more reconcilers against a cluster")
    run.add_argument("reconcilers", nargs="+", metavar="pkg.module:Class")
    run.add_argument("--app-dir", default=".", help="where to import reconcilers from")
    run.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    run.add_argument("--context")
    run.add_argument("--namespace", help="watch one namespace (default: all)")
    run.add_argument(
        "--workers", type=int, help="concurrent reconciles (default: each reconciler's, often 16)"
    )
    run.add_argument("--leader-elect", action="store_true", help="one active replica at a time")
    run.add_argument("--lease-name", help="default: customtask-<kinds>")
    run.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    run.add_argument(
        "--lease-duration", type=float, default=15.0, help="seconds a standby waits to take over"
    )
    run.add_argument(
        "--renew-deadline", type=float, default=10.0, help="seconds a leader may fail to renew"
    )
    run.add_argument("--retry-period", type=float, default=2.0, help="seconds between lease tries")
    run.add_argument("--health-port", type=int, default=8081, help="/healthz /readyz /metrics")
    run.add_argument("--no-events", action="store_true", help="do not record Kubernetes Events")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(handler=_run)

    dev = commands.add_parser("dev", help="a local control plane for development")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_commands.add_parser(
        "up", help="start etcd, kube-apiserver and Tekton's controller; apply and follow runs"
    )
    up.add_argument("-f", "--filename", action="append", default=[], help="manifest to apply")
    up.add_argument(
        "-c",
        "--controller",
        action="append",
        default=[],
        metavar="pkg.module:Class",
        help="a reconciler to run in this process",
    )
    up.add_argument("--app-dir", default=".", help="where to import controllers from")
    up.add_argument("-n", "--namespace", default="default")
    up.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to follow the PipelineRuns"
    )
    up.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the control plane up until Ctrl-C (or SIGTERM)",
    )
    up.add_argument(
        "--node",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a real node so Tekton's tasks run in Pods (default: as root, when installed)",
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
