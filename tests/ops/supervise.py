"""Runs a Supervisor over tests/ops/drain_worker.py (a subprocess of test_drain)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from gateway.ops.supervisor import Supervisor


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    workers, port, directory = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    command = [sys.executable, "-m", "tests.ops.drain_worker", port]
    return asyncio.run(Supervisor(workers, command, multiprocess_dir=directory).run())


if __name__ == "__main__":
    sys.exit(main())
