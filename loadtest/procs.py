"""Processes the load tester starts and watches: the gateway, the agent server, /proc.

Every process is started in its own session (``start_new_session``), so stopping it
signals its whole process group: SIGTERM (the gateway drains: live calls are ended and
billed), then SIGKILL after a grace. :class:`Spawned` is a context manager and
:func:`stop_group` runs in ``finally`` blocks, so nothing outlives a run, not even on
Ctrl-C or an exception.

CPU and memory come from ``/proc/<pid>/stat`` (utime + stime, clock ticks) and
``/proc/<pid>/status`` (VmRSS), proc(5): no dependency, works for any pid on Linux.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.affinity import thread_pinned

__all__ = ["ProcSample", "Spawned", "free_port", "read_proc", "read_tree", "stop_group"]

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: when (monotonic), CPU seconds used so far, RSS bytes."""

    at: float
    cpu_s: float
    rss_bytes: int


def read_proc(pid: int) -> ProcSample | None:
    """Read ``pid``'s CPU time and RSS; None if it is gone or not readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14, 15
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
            break
    return ProcSample(time.monotonic(), cpu, rss)


def read_tree(pid: int, exclude: set[int | None]) -> ProcSample | None:
    """``pid`` and its child processes (minus ``exclude``), summed: the tester's workers.

    Children come from ``/proc/<pid>/task/<tid>/children`` (proc(5), Linux 3.5+).
    """
    total = read_proc(pid)
    if total is None:
        return None
    children: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            children.update(int(c) for c in text.split())
    cpu, rss = total.cpu_s, total.rss_bytes
    for child in children - {p for p in exclude if p is not None}:
        sample = read_proc(child)
        if sample is not None:
            cpu, rss = cpu + sample.cpu_s, rss + sample.rss_bytes
    return ProcSample(total.at, cpu, rss)


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int | None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace_s``; the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # Children of the group that outlived their parent are killed too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


@dataclass
class Spawned:
    """A child process in its own process group, output to ``log``; stopped on exit."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    grace_s: float = 10.0
    cpus: frozenset[int] | None = None
    """The CPUs it runs on, from its start (:mod:`loadtest.affinity`); None: inherited."""
    cwd: Path | None = None
    """Its working directory; None: this process's."""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __enter__(self) -> Spawned:
        with self.log.open("ab") as out, thread_pinned(self.cpus):
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Stop it (idempotent); the exit code."""
        return None if self.proc is None else stop_group(self.proc, self.grace_s)

    def kill(self) -> None:
        """SIGKILL the group at once (fault runs)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def output(self) -> str:
        """What the child wrote so far (its log file)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""
