"""The load tester's event loop: uvloop when it is importable, else asyncio's own.

The tester, its worker processes and the reference agent server share the machine's
cores with the gateway they measure (two on the lead's machine). uvloop's cheaper
wake-ups and socket I/O leave more of those cores to the gateway, so every ``asyncio``
entry point of the tester goes through :func:`run`.

``RYMI_LOADTEST_LOOP=asyncio`` forces the standard loop in every tester process (the
workers and the agent server inherit the environment; the gateway does not, it is given
no ``RYMI_*`` variable of the tester's), to check that a figure does not depend on the
tester's loop. The loop each run used is in the report's ``machine.tester_loop``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["ENV", "choice", "run", "running"]

ENV = "RYMI_LOADTEST_LOOP"
"""``uvloop`` (the default: used when importable) or ``asyncio``."""

T = TypeVar("T")


def choice(environ: Mapping[str, str] | None = None) -> str:
    """The loop :func:`run` uses: ``uvloop`` or ``asyncio``.

    Raises:
        ValueError: ``RYMI_LOADTEST_LOOP`` is neither.
    """
    env = os.environ if environ is None else environ
    wanted = env.get(ENV, "").strip().lower() or "uvloop"
    if wanted not in ("uvloop", "asyncio"):
        raise ValueError(f"{ENV}: expected uvloop or asyncio, got {wanted!r}")
    if wanted == "uvloop" and _uvloop_factory() is None:
        return "asyncio"
    return wanted


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on the loop :func:`choice` names."""
    factory = _uvloop_factory() if choice() == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def running() -> str:
    """The running loop's kind (``uvloop`` or ``asyncio``); :func:`choice` outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return choice()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not installed (it is a dependency on Linux and macOS only)
        return None
    return uvloop.new_event_loop
