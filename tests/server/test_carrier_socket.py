"""The synchronous carrier frame writer, read back by real WebSocket clients over loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gateway.server.carrier_socket import MAX_BUFFERED_BYTES, CarrierSocket, encode_frame

pytestmark = pytest.mark.both_loops

Handler = Callable[[CarrierSocket, web.WebSocketResponse], object]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a server whose one route runs ``handler`` on a CarrierSocket; yields its URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        async def route(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            result = handler(CarrierSocket(ws, request.transport), ws)
            if asyncio.iscoroutine(result):
                await result
            async for _ in ws:  # until the client closes
                pass
            return ws

        app = web.Application()
        app.router.add_get("/ws", route)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/ws"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_frame_header_lengths_follow_rfc6455_section_5_2(size: int) -> None:
    frame = encode_frame(b"x" * size, text=False)
    assert frame[0] == 0x82  # FIN + binary
    if size < 126:
        assert frame[1] == size
        assert len(frame) == 2 + size
    elif size < 65536:
        assert frame[1] == 126
        assert int.from_bytes(frame[2:4], "big") == size
    else:
        assert frame[1] == 127
        assert int.from_bytes(frame[2:10], "big") == size
    assert frame[1] & 0x80 == 0  # a server never masks (§5.1)


async def test_a_real_client_reads_every_size_of_text_and_binary(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 100_000]

    def send_all(sock: CarrierSocket, ws: web.WebSocketResponse) -> None:
        for n in sizes:
            assert sock.send("é" * (n // 2) + "a" * (n % 2))
            assert sock.send(bytes(range(256)) * (n // 256) + bytes(n % 256))

    url = await serve(send_all)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, max_msg_size=1 << 20) as client,
    ):
        for n in sizes:
            text = await client.receive()
            assert text.type is aiohttp.WSMsgType.TEXT
            assert text.data == "é" * (n // 2) + "a" * (n % 2)
            binary = await client.receive()
            assert binary.type is aiohttp.WSMsgType.BINARY
            assert binary.data == bytes(range(256)) * (n // 256) + bytes(n % 256)


async def test_frames_interleave_cleanly_with_aiohttp_s_own_writes(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def mixed(sock: CarrierSocket, ws: web.WebSocketResponse) -> None:
        for i in range(50):
            sock.send(f"direct {i}")
            await ws.send_str(f"aiohttp {i}")

    url = await serve(mixed)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as client:
        got = [(await client.receive()).data for _ in range(100)]
    assert got == [m for i in range(50) for m in (f"direct {i}", f"aiohttp {i}")]


async def test_nothing_is_written_once_the_socket_is_closing(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    checked: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()

    async def close_then_send(sock: CarrierSocket, ws: web.WebSocketResponse) -> None:
        assert sock.writable
        sock.send("before")
        closing = asyncio.create_task(ws.close(code=4000))
        await asyncio.sleep(0)  # close() has begun: the close frame is on its way
        checked.set_result([sock.send("after"), sock.writable])
        await closing

    url = await serve(close_then_send)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as client:
        first = await client.receive()
        second = await client.receive()
    assert first.data == "before"
    assert second.type is aiohttp.WSMsgType.CLOSE
    assert second.data == 4000
    assert await checked == [False, False]


async def test_a_carrier_that_stops_reading_gets_drops_not_unbounded_memory(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    outcome: asyncio.Future[tuple[int, int, int]] = asyncio.get_running_loop().create_future()

    def flood(sock: CarrierSocket, ws: web.WebSocketResponse) -> None:
        payload = b"\x00" * 60_000
        sent = 0
        for _ in range(2000):  # far more than the kernel's loopback buffers hold
            sent += sock.send(payload)
        transport = ws._payload_writer.transport  # type: ignore[union-attr]
        assert transport is not None
        outcome.set_result((sent, sock.dropped, transport.get_write_buffer_size()))

    url = await serve(flood)
    host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
    raw = socket.create_connection((host, port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        sent, dropped, buffered = await asyncio.wait_for(outcome, 10)
    finally:
        raw.close()
    assert dropped > 0
    assert sent + dropped == 2000
    # One frame past the bound at most: the check is made before each write.
    assert buffered <= MAX_BUFFERED_BYTES + 60_010
