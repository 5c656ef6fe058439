"""The carrier connection (handshake, read callback, writes, close) with real clients.

aiohttp's WebSocket client plays a correct carrier; a raw TCP socket plays one that
breaks RFC 6455 in ways no correct client can (unmasked frames, garbage, silence).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import CloseCode
from gateway.server.carrier_ws import MAX_BUFFERED_BYTES, CarrierConnection, accept
from gateway.server.limits import MessageRate

pytestmark = pytest.mark.both_loops

Handler = Callable[[CarrierConnection], Awaitable[None]]
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass
class Listener:
    """Records what the connection delivers, and can be told to fail."""

    messages: list[str | bytes] = field(default_factory=list)
    closed: list[CloseCode | None] = field(default_factory=list)
    fail_on: str | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def on_carrier_message(self, message: str | bytes, received_at: float) -> None:
        if message == self.fail_on:
            raise RuntimeError("the call's handling broke")
        self.messages.append(message)
        self.event.set()

    def on_carrier_closed(self, failure: CloseCode | None) -> None:
        self.closed.append(failure)
        self.event.set()


@dataclass
class Server:
    url: str
    port: int
    done: list[CarrierConnection]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """Start a server whose one route accepts a connection and runs ``handler`` on it."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, *, rate: int = 1000, close_timeout_s: float = 5) -> Server:
        done: list[CarrierConnection] = []

        async def route(request: web.Request) -> web.StreamResponse:
            conn = await accept(
                request,
                max_message_bytes=65_536,
                rate=MessageRate(rate, window_s=1),
                close_timeout_s=close_timeout_s,
            )
            await handler(conn)
            done.append(conn)
            return conn.response

        app = web.Application()
        app.router.add_get("/ws", route)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return Server(f"http://127.0.0.1:{port}/ws", port, done)

    yield start
    for runner in runners:
        await runner.cleanup()


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (state of another coroutine's objects) for up to 5 s."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 (no event to wait on: plain attributes)
            await asyncio.sleep(0.005)


def attached(listener: Listener, *, then_close: int | None = None) -> Handler:
    """A handler that attaches ``listener`` and waits for the socket to close or fail.

    Then it closes with ``then_close`` (the call's own close), if given.
    """

    async def run(conn: CarrierConnection) -> None:
        conn.attach(listener)
        await until(lambda: bool(listener.closed))
        if then_close is not None:
            await conn.close(then_close)

    return run


async def raw_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(UPGRADE)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_close(reader: asyncio.StreamReader) -> int:
    """Read server frames until a close frame; return its code."""
    async with asyncio.timeout(5):
        while True:
            first, size = await reader.readexactly(2)
            payload = await reader.readexactly(size)
            if first == 0x88:
                return int.from_bytes(payload[:2], "big")


def masked(first: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    return (
        bytes((first, 0x80 | len(payload)))
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


async def test_the_handshake_answers_rfc6455_s_example_key(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def hold(conn: CarrierConnection) -> None:
        await conn.close(1000)

    server = await serve(hold)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(UPGRADE)
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    writer.close()
    assert head.startswith("http/1.1 101")
    # RFC 6455 §1.3: this key's accept value.
    assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head
    assert "upgrade: websocket" in head


@pytest.mark.parametrize(
    ("drop", "add"),
    [
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""),
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"Sec-WebSocket-Key: c2hvcnQ=\r\n"),
        (b"Sec-WebSocket-Version: 13\r\n", b"Sec-WebSocket-Version: 8\r\n"),
        (b"Upgrade: websocket\r\n", b"Upgrade: h2c\r\n"),
    ],
    ids=["no-key", "short-key", "old-version", "not-websocket"],
)
async def test_a_bad_upgrade_request_is_a_400_and_the_handler_never_runs(
    serve: Callable[..., Awaitable[Server]], drop: bytes, add: bytes
) -> None:
    ran: list[bool] = []

    async def hold(conn: CarrierConnection) -> None:
        ran.append(True)

    server = await serve(hold)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(UPGRADE.replace(drop, add))
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")
    assert ran == []


async def test_messages_reach_the_listener_in_order_with_queued_ones_first(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    listener = Listener()
    first: list[str | bytes | None] = []

    async def run(conn: CarrierConnection) -> None:
        first.append(await conn.receive())  # before attach: the queue
        await until(lambda: len(conn._queue) >= 2)  # two more wait for the listener
        conn.attach(listener)
        await until(lambda: bool(listener.closed))

    server = await serve(run)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as client:
        await client.send_str("start")
        await client.send_bytes(b"\x00\x01")
        await client.send_str("é" * 10)
        await until(lambda: len(listener.messages) == 2)
        await client.send_bytes(b"live")
        await until(lambda: len(listener.messages) == 3)
    assert first == ["start"]
    assert listener.messages == [b"\x00\x01", "é" * 10, b"live"]
    assert listener.closed == [None]  # the client closed: not a failure


async def test_a_message_is_timed_by_the_precise_monotonic_clock_on_either_loop(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    # uvloop's loop.time() counts whole milliseconds: a message read 0.2 ms after it was
    # sent would seem to arrive before it was sent, and the gateway-added latency
    # measured from it would be ~0 (docs/operations.md).
    stamps: list[tuple[float, float]] = []

    @dataclass
    class Timed(Listener):
        def on_carrier_message(self, message: str | bytes, received_at: float) -> None:
            stamps.append((received_at, time.monotonic()))
            super().on_carrier_message(message, received_at)

    listener = Timed()
    server = await serve(attached(listener))
    sent: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as client:
        for n in range(5):
            sent.append(time.monotonic())
            await client.send_str(f"frame {n}")
            await until(lambda: len(listener.messages) == len(sent))
    assert len(stamps) == 5
    for before, (received_at, seen) in zip(sent, stamps, strict=True):
        assert before <= received_at <= seen


async def test_a_ping_is_answered_with_its_payload_and_a_client_close_is_echoed(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    listener = Listener()
    server = await serve(attached(listener))
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, autoping=False, autoclose=False) as client,
    ):
        await client.ping(b"are you there")
        pong = await client.receive()
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        await client._writer.send_frame(  # a close frame, then wait for the echo
            (4001).to_bytes(2, "big") + b"bye", aiohttp.WSMsgType.CLOSE
        )
        echo = await client.receive()
        assert (echo.type, echo.data) == (aiohttp.WSMsgType.CLOSE, 4001)
        assert (await client.receive()).type in (
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSE,
        )  # the server closed TCP first (§7.1.1)
    await until(lambda: bool(server.done))
    assert listener.closed == [None]
    assert server.done[0].close_code == 4001


async def test_close_sends_the_code_and_waits_for_the_client_s_answer(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def run(conn: CarrierConnection) -> None:
        assert conn.send("before")
        closing = asyncio.create_task(conn.close(CloseCode.START_TIMEOUT, "no start"))
        await asyncio.sleep(0)
        assert not conn.writable
        assert not conn.send("after")  # nothing is written once closing
        await closing

    server = await serve(run)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as client:
        first = await client.receive()
        second = await client.receive()
    assert first.data == "before"
    assert (second.type, second.data, second.extra) == (
        aiohttp.WSMsgType.CLOSE,
        CloseCode.START_TIMEOUT,
        "no start",
    )
    await until(lambda: bool(server.done))
    assert server.done[0].close_code == CloseCode.START_TIMEOUT


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (bytes((0x81, 2)) + b"hi", CloseCode.PROTOCOL_ERROR),  # unmasked (§5.1)
        (masked(0x81, b"\xff\xfe"), CloseCode.INVALID_PAYLOAD),
        (masked(0x88, b"\x03\xed"), CloseCode.PROTOCOL_ERROR),  # close code 1005 sent
    ],
    ids=["unmasked", "invalid-utf8", "close-1005"],
)
async def test_a_protocol_error_fails_the_connection_with_its_code(
    serve: Callable[..., Awaitable[Server]], wire: bytes, code: CloseCode
) -> None:
    listener = Listener()
    attached = asyncio.Event()

    async def run(conn: CarrierConnection) -> None:
        conn.attach(listener)
        attached.set()
        await until(lambda: bool(listener.closed))
        await conn.close(CloseCode.CALL_ENDED)  # the call's own close: the first code stays

    server = await serve(run)
    reader, writer = await raw_connect(server.port)
    await attached.wait()
    writer.write(masked(0x81, b"ok") + wire + masked(0x81, b"never delivered"))
    assert await read_close(reader) == code
    # After a framing error nothing more is parsed: the client's hang-up ends the close.
    writer.close()
    await until(lambda: bool(server.done))
    assert listener.messages == ["ok"]
    assert listener.closed == [code]
    assert server.done[0].failure == code


async def test_a_flood_is_closed_with_1008_and_an_oversized_message_with_1009(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    listeners: list[Listener] = []

    async def run(conn: CarrierConnection) -> None:
        listener = Listener()
        listeners.append(listener)
        conn.attach(listener)
        await until(lambda: bool(listener.closed))
        await conn.close(CloseCode.CALL_ENDED)

    server = await serve(run, rate=20)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url) as flood:
            for _ in range(200):  # 200 messages in one second, limit 20 for 1 s
                await flood.send_str("x")
            msg = await flood.receive()
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CloseCode.POLICY_VIOLATION)
        async with http.ws_connect(server.url) as big:
            await big.send_str("y" * 70_000)
            msg = await big.receive()
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CloseCode.MESSAGE_TOO_BIG)
    assert [listener.closed for listener in listeners] == [
        [CloseCode.POLICY_VIOLATION],
        [CloseCode.MESSAGE_TOO_BIG],
    ]
    assert len(listeners[0].messages) <= 40  # nothing is delivered after the failure


async def test_messages_after_detach_are_discarded_and_the_socket_keeps_reading(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    listener = Listener()
    detached, all_read = asyncio.Event(), asyncio.Event()

    async def run(conn: CarrierConnection) -> None:
        conn.attach(listener)
        await until(lambda: listener.messages == ["live"])
        conn.detach()
        detached.set()
        await all_read.wait()
        assert len(conn._queue) == 0  # discarded, not queued (nor reading paused)
        await conn.close(CloseCode.NORMAL)

    server = await serve(run)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, autoping=False) as client,
    ):
        await client.send_str("live")
        await detached.wait()
        for _ in range(100):  # more than the queue holds before reading pauses
            await client.send_str("late")
        await client.ping(b"after them")  # answered only once everything before is read
        pong = await client.receive()
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"after them")
        all_read.set()
        msg = await client.receive()
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CloseCode.NORMAL)
    assert listener.messages == ["live"]


async def test_a_failing_listener_closes_its_socket_with_1011(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    listener = Listener(fail_on="boom")
    server = await serve(attached(listener, then_close=CloseCode.CALL_ENDED))
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as client:
        await client.send_str("fine")
        await client.send_str("boom")
        msg = await client.receive()
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, CloseCode.INTERNAL_ERROR)
    assert listener.messages == ["fine"]
    assert listener.closed == [CloseCode.INTERNAL_ERROR]


async def test_a_client_that_never_answers_the_close_is_dropped_after_the_timeout(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    async def run(conn: CarrierConnection) -> None:
        await conn.close(CloseCode.NORMAL)

    server = await serve(run, close_timeout_s=0.2)
    reader, writer = await raw_connect(server.port)
    assert await read_close(reader) == CloseCode.NORMAL
    async with asyncio.timeout(5):  # we never answer: the server drops the connection
        assert await reader.read() == b""
    writer.close()
    assert server.done


async def test_a_client_that_hangs_up_without_a_close_frame_ends_the_listener(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    listener = Listener()

    async def run(conn: CarrierConnection) -> None:
        conn.attach(listener)
        await until(lambda: bool(listener.closed))
        assert not conn.writable
        await conn.close(CloseCode.NORMAL)  # returns at once: the connection is gone

    server = await serve(run)
    _, writer = await raw_connect(server.port)
    writer.write(masked(0x82, b"audio"))
    await until(lambda: bool(listener.messages))
    writer.close()
    await until(lambda: bool(server.done))
    assert listener.messages == [b"audio"]
    assert listener.closed == [None]


async def test_a_real_client_reads_every_size_of_text_and_binary(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 100_000]

    async def send_all(conn: CarrierConnection) -> None:
        for n in sizes:
            assert conn.send("é" * (n // 2) + "a" * (n % 2))
            assert conn.send(bytes(range(256)) * (n // 256) + bytes(n % 256))
        await conn.close(CloseCode.NORMAL)

    server = await serve(send_all)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, max_msg_size=1 << 20) as client,
    ):
        for n in sizes:
            text = await client.receive()
            assert text.type is aiohttp.WSMsgType.TEXT
            assert text.data == "é" * (n // 2) + "a" * (n % 2)
            binary = await client.receive()
            assert binary.type is aiohttp.WSMsgType.BINARY
            assert binary.data == bytes(range(256)) * (n // 256) + bytes(n % 256)


async def test_a_carrier_that_stops_reading_gets_drops_not_unbounded_memory(
    serve: Callable[..., Awaitable[Server]],
) -> None:
    outcome: asyncio.Future[tuple[int, int, int]] = asyncio.get_running_loop().create_future()

    async def flood(conn: CarrierConnection) -> None:
        payload = b"\x00" * 60_000
        sent = 0
        for _ in range(2000):  # far more than the kernel's loopback buffers hold
            sent += conn.send(payload)
        buffered = conn._transport.get_write_buffer_size()
        outcome.set_result((sent, conn.dropped, buffered))
        await conn.close(CloseCode.NORMAL)

    server = await serve(flood, close_timeout_s=0.2)
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sendall(UPGRADE)
    try:
        sent, dropped, buffered = await asyncio.wait_for(outcome, 10)
    finally:
        raw.close()
    assert dropped > 0
    assert sent + dropped == 2000
    # One frame past the bound at most: the check is made before each write.
    assert buffered <= MAX_BUFFERED_BYTES + 60_010


def test_the_example_key_is_16_bytes() -> None:
    # The fixture's key is RFC 6455's own example nonce (§1.3, §4.2.1 item 5).
    assert len(base64.b64decode("dGhlIHNhbXBsZSBub25jZQ==")) == 16
