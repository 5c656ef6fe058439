"""CPU pinning of a run's processes: the gateway, the agent server, the tester.

On a small machine the gateway, the agent server and the tester compete for the same
cores, and the scheduler moves them around: pinning each to its own CPUs
(``--gateway-cpus 0 --tester-cpus 1``) makes a measurement say what the gateway does
on the cores it was given, and makes runs comparable.

A CPU list is what ``taskset -c`` and cpuset(7) take: ``0``, ``0,1``, ``1-3``,
``0-1,3``. Every CPU named must be one this process may run on
(``os.sched_getaffinity(0)`` when the command starts), else it is a usage error.

How the mask is applied, sched_setaffinity(2):

* The tester pins itself (its main thread, before any other thread exists) and its
  worker processes (``ProcessPoolExecutor(initializer=...)``).
* A spawned child gets its mask by *inheritance*, not by a call after it started:
  :func:`thread_pinned` sets the calling thread's mask around ``Popen`` and
  restores it, so the child runs on its CPUs from its first instruction, with every
  thread and process it starts. A mask set on a pid after ``Popen`` would race with
  the child's own threads (the call changes one thread only).
* A child without its own option gets the CPUs allowed at start, not the tester's: with
  only ``--tester-cpus 1`` the gateway is not squeezed onto the tester's CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Pinning", "format_cpus", "observed", "parse_cpus", "thread_pinned"]


def parse_cpus(text: str, option: str, allowed: Iterable[int]) -> frozenset[int]:
    """The CPUs of a list like ``0,2-3``, each one of ``allowed``.

    Raises:
        ValueError: not a CPU list, or a CPU outside ``allowed``; the message names
            ``option`` and the allowed CPUs.
    """
    permitted = frozenset(allowed)
    cpus: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(
                f"{option}: expected a CPU list like 0 or 0,1 or 1-3, got {text!r}"
            ) from None
        if first < 0 or last < first:
            raise ValueError(f"{option}: expected ascending CPU numbers >= 0, got {part!r}")
        cpus.update(range(first, last + 1))
    outside = cpus - permitted
    if outside:
        raise ValueError(
            f"{option}: CPU {format_cpus(outside)} not available; "
            f"this process may use CPUs {format_cpus(permitted)}"
        )
    return frozenset(cpus)


def format_cpus(cpus: Iterable[int]) -> str:
    """A CPU list in the short form: ``{0, 1, 2, 5}`` → ``0-2,5``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = 0
    for i, cpu in enumerate(ordered):
        if i + 1 == len(ordered) or ordered[i + 1] != cpu + 1:
            first = ordered[start]
            parts.append(str(cpu) if first == cpu else f"{first}-{cpu}")
            start = i + 1
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class Pinning:
    """The CPUs of each process of a run (None: not pinned)."""

    allowed: frozenset[int]
    """What this process could run on when the command started."""
    gateway: frozenset[int] | None = None
    agent: frozenset[int] | None = None
    tester: frozenset[int] | None = None

    @classmethod
    def from_options(
        cls,
        allowed: Iterable[int],
        *,
        gateway: str | None = None,
        agent: str | None = None,
        tester: str | None = None,
    ) -> Pinning:
        """Parse ``--gateway-cpus``, ``--agent-cpus`` and ``--tester-cpus``.

        Raises:
            ValueError: as :func:`parse_cpus`.
        """
        permitted = frozenset(allowed)

        def parse(text: str | None, option: str) -> frozenset[int] | None:
            return None if text is None else parse_cpus(text, option, permitted)

        return cls(
            permitted,
            parse(gateway, "--gateway-cpus"),
            parse(agent, "--agent-cpus"),
            parse(tester, "--tester-cpus"),
        )

    def check(self, *, spawned: bool, agent_server: bool) -> None:
        """Check the options fit the run: only processes it spawns can be pinned.

        Raises:
            ValueError: ``--gateway-cpus``/``--agent-cpus`` with a ``--target``, or
                ``--agent-cpus`` without an agent server (``--agent external``).
        """
        if not spawned and (self.gateway is not None or self.agent is not None):
            raise ValueError(
                "--gateway-cpus and --agent-cpus pin spawned processes: not with --target"
            )
        if self.agent is not None and not agent_server:
            raise ValueError("--agent-cpus pins the agent server: it needs --agent external")

    @property
    def pinned(self) -> bool:
        """Whether anything is pinned."""
        return any(c is not None for c in (self.gateway, self.agent, self.tester))

    def for_child(self, cpus: frozenset[int] | None) -> frozenset[int] | None:
        """The mask a spawned child gets: its own, or the allowed CPUs when the tester is
        pinned (so that it does not inherit the tester's), or None (inherit as usual)."""
        if cpus is not None:
            return cpus
        return self.allowed if self.tester is not None else None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready: each process's CPU list as asked (None: not pinned)."""
        return {
            "allowed": format_cpus(self.allowed),
            "gateway": None if self.gateway is None else format_cpus(self.gateway),
            "agent": None if self.agent is None else format_cpus(self.agent),
            "tester": None if self.tester is None else format_cpus(self.tester),
        }

    def report(self, **pids: int | None) -> dict[str, Any]:
        """:meth:`as_dict` and, under ``observed``, the CPUs each of ``pids`` (by name) and
        this process (``tester``) really have."""
        seen = {name: observed(pid) for name, pid in pids.items()}
        return self.as_dict() | {"observed": seen | {"tester": observed(os.getpid())}}


def observed(pid: int | None) -> str | None:
    """The CPU list ``pid`` may run on now; None if unknown (no pid, gone, not ours)."""
    if pid is None:
        return None
    try:
        return format_cpus(os.sched_getaffinity(pid))
    except OSError:
        return None


@contextlib.contextmanager
def thread_pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the block with the calling thread pinned to ``cpus``, then restore its mask.

    Threads and processes started in the block inherit the mask (``clone``/``fork``
    copy the calling thread's): around ``Popen``, the child runs on ``cpus`` from its
    first instruction; around a whole command, the tester does. None changes nothing.
    """
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
