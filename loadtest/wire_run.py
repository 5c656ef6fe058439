"""Run a wire capture over a run's steady window (:mod:`loadtest.wire_capture` as a
child process) and read it back (:mod:`loadtest.wire`).

The child inherits the tester's CPU affinity, so it runs beside the tester and the
agent server, off the gateway's CPU. The capture is read after the calls have ended:
parsing a few hundred thousand packets in the tester's process would hold up its calls.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from loadtest.wire import WireCapture, frames_by_stream, read_pcap, tcp_segments

__all__ = ["CaptureFailed", "capture_steady", "load_capture"]

_STARTUP_S = 0.3  # the child's interpreter start: its capture ends this much later


class CaptureFailed(RuntimeError):
    """The capture child failed (no ``CAP_NET_RAW``, say); the message says why."""


async def capture_steady(
    window: tuple[float, float], seconds: float, workdir: Path | None
) -> tuple[Path, dict[str, float]]:
    """Capture ``seconds`` (at most the window) from the window's start; the pcap's path
    and the child's counts, with the seconds it was asked to capture.

    Raises:
        CaptureFailed: the child did not capture.
    """
    start, end = window
    seconds = min(seconds, max(0.5, end - start - _STARTUP_S))
    folder = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="rymi-wire-"))
    path = folder / "wire.pcap"
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.wire_capture",
        str(seconds),
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    try:
        counts = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        counts = {"error": err.decode(errors="replace").strip()[-300:] or "no output"}
    if child.returncode != 0 or "error" in counts:
        raise CaptureFailed(f"wire capture failed: {counts.get('error')}")
    return path, counts | {"seconds": seconds}


def load_capture(path: Path, counts: dict[str, float]) -> WireCapture:
    """Read a capture into every stream's WebSocket frames."""
    streams = frames_by_stream(tcp_segments(read_pcap(path.read_bytes())))
    return WireCapture(counts["seconds"], counts, streams)
