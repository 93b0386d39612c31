"""Child processes of a local control plane, each logging to its own file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self

__all__ = [
    "AsyncService",
    "ManagedProcess",
    "child_pids",
    "cpu_seconds",
    "free_port",
    "has_exited",
    "kill_leftovers",
    "rss_mb",
    "tail_file",
]


class AsyncService:
    """Something started and stopped as an async context manager (stopped if starting fails)."""

    async def start(self) -> None:
        """Start everything."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop everything started, even after a partial start."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """One component (etcd, kube-apiserver...) started, watched and stopped by us alone.

    Output goes to ``<log_dir>/<name>.log`` (appended across restarts). Stopping sends
    SIGTERM to the process group we created, then SIGKILL after ``grace`` seconds.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The running process's id, or ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the process (in its own process group) with output to its log file."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """Raise with the log's tail if the process has exited."""
        if self._proc is not None and self._proc.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self._proc.returncode}; last log lines:\n"
                + self.tail()
            )

    def _signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    async def wait(self) -> int:
        """Wait for the process to exit; returns its exit code."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return await self._proc.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; only our own process group.

        Cancelled meanwhile, it SIGKILLs the group at once: nothing is left running.
        """
        if self._proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), grace)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await self._proc.wait()
        except asyncio.CancelledError:
            self._signal(signal.SIGKILL)
            raise

    async def kill(self) -> None:
        """SIGKILL at once (a crash, for fault-injection tests)."""
        if self._proc is not None:
            self._signal(signal.SIGKILL)
            await self._proc.wait()

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        return tail_file(self.log_path, lines)


def tail_file(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (``""`` if there is none)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (state first), or ``None`` (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()


def has_exited(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts: it runs no more). Linux only."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] == "Z"


def child_pids(pid: int) -> list[int]:
    """The running processes whose parent is ``pid`` (Linux only): to check in a test that a
    command stopped what it started."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
                children.append(int(entry.name))
    return sorted(children)


def kill_leftovers(pids: Iterable[int]) -> list[int]:
    """SIGKILL those of ``pids`` still running and return them: a test that checks a
    command stopped the processes it started cleans up after a failure this way."""
    left = [pid for pid in pids if not has_exited(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def rss_mb(pid: int) -> float:
    """Process ``pid``'s resident memory in MiB (``VmRSS``), for benchmarks."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used, for benchmarks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
