"""A dispatcher in its own process, for the kill test.

``python -m tests.webhooks.dispatcher_worker DATABASE_URL``

Runs until killed, with the test's scaled settings (1 s attempts, 2 s lease) and the
store suites' master key. Prints ``ready`` once it runs.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.store.secrets import Keyring
from gateway.store.sql.engine import create_engine
from gateway.webhooks.dispatcher import Dispatcher, DispatchSettings
from tests.store.conftest import KEY_A

SETTINGS = DispatchSettings(
    dev_mode=True,
    attempt_timeout_s=1.0,
    retry_base_s=0.2,
    lease_s=2.0,
    poll_interval_s=0.02,
    concurrency=4,
)


async def main(url: str) -> None:
    """Dispatch from the database at ``url`` forever."""
    engine = create_engine(url)
    async with Dispatcher(engine, Keyring((KEY_A,)), SETTINGS) as dispatcher:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await dispatcher.run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
