"""Child processes are stopped with their whole group; /proc readings."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from loadtest.procs import Spawned, read_proc

# The child starts a grandchild in the same group and both sleep: stopping the child's
# group must end both.
CHILD = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(p.pid, flush=True); time.sleep(60)"
)


def test_read_proc_of_this_process() -> None:
    sample = read_proc(os.getpid())
    assert sample is not None
    assert sample.cpu_s > 0
    assert sample.rss_bytes > 10 * 2**20
    assert read_proc(2**22 + 12345) is None  # above pid_max: no such process


def test_spawned_group_is_stopped_with_its_grandchildren(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    with Spawned([sys.executable, "-c", CHILD], dict(os.environ), log, grace_s=5) as child:
        for _ in range(200):
            if log.read_text().strip():
                break
            time.sleep(0.05)
        grandchild = int(log.read_text().split()[0])
        assert child.alive()
        assert read_proc(grandchild) is not None
    assert not child.alive()
    # The grandchild got the group's signal too: it is gone (or a zombie until reaped)
    # once the kernel has run it, a moment later at most.
    assert _ends(grandchild)


def _ends(pid: int) -> bool:
    for _ in range(200):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
        except (OSError, IndexError):
            return True
        if state in "ZX":
            return True
        time.sleep(0.01)
    return False
