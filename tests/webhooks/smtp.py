"""A tiny SMTP stand-in (RFC 5321 subset: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).

Enough for :mod:`smtplib` to hand over a message; keeps each message's raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class SmtpStandIn:
    """Messages received (raw DATA, dot-unstuffed) and the port served on."""

    port: int = 0
    messages: list[bytes] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int) -> None:
        """Wait until ``count`` messages arrived (callers bound it with a timeout)."""
        while len(self.messages) < count:
            self.received.clear()
            await self.received.wait()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stand-in ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250 stand-in\r\n")
            elif verb == b"DATA":
                writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
                await writer.drain()
                self.messages.append(await _data(reader))
                self.received.set()
                writer.write(b"250 OK queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:  # MAIL, RCPT, RSET, NOOP
                writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()


async def _data(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while (line := await reader.readline()) not in (b".\r\n", b""):
        lines.append(line[1:] if line.startswith(b"..") else line)
    return b"".join(lines)


@contextlib.asynccontextmanager
async def smtp_stand_in() -> AsyncIterator[SmtpStandIn]:
    """Serve an :class:`SmtpStandIn` on ``127.0.0.1:0``."""
    stand_in = SmtpStandIn()
    server = await asyncio.start_server(stand_in.session, "127.0.0.1", 0)
    stand_in.port = server.sockets[0].getsockname()[1]
    try:
        yield stand_in
    finally:
        server.close()
        await server.wait_closed()
