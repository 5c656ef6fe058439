"""End-to-end harness: a real gateway on loopback, carriers played by the adapters.

* :class:`GatewayUnderTest` runs :func:`gateway.server.create_app` on a free port with a
  temp SQLite file and in-process (or Redis) coordination, plus a stand-in carrier REST
  API that records hang-up requests.
* :class:`PlayedCall` plays one carrier call: the signed answer webhook
  (``sign_answer_request``), the signed WebSocket upgrade (``sign_upgrade_request``),
  then the carrier's media socket (``simulate_carrier``), sending 20 ms frames in real
  time and playing what the gateway sends back through the carrier's own playback
  buffer (``advance``), so marks are acknowledged when they are heard.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np
from aiohttp import web

from gateway import carriers
from gateway.carriers import CarrierSide, WireMessage
from gateway.config import Settings
from gateway.ops import OpsSettings
from gateway.server import ENGINE, Engine, create_app
from gateway.server.answer import call_id_for
from gateway.server.app import default_links
from gateway.server.context import LinkFactory
from gateway.store.models import (
    Agent,
    CallRecord,
    CallStatus,
    CarrierCredentials,
    PlivoCredentials,
    Tenant,
    TwilioCredentials,
    VonageCredentials,
)
from gateway.store.secrets import Secret
from loadtest.audio import FIXTURE, load_fixture
from rymi_codecs import MULAW_8K, Resampler, decode, encode
from tests.helpers.redis_server import free_port

TWILIO_ACCOUNT = "AC" + "0" * 32
CREDENTIAL = "test-auth-token-" + "x" * 16
NUMBER = "+15555550123"
CALLER = "+14155550100"


def load_speech() -> bytes:
    """The speech fixture: PCM16 LE, 16 kHz, mono."""
    return load_fixture(FIXTURE)


def to_carrier(pcm16k: bytes, carrier: str) -> tuple[list[bytes], int]:
    """The fixture in the carrier's wire format as 20 ms frames; and the frame size."""
    if carrier == "vonage":
        wire, frame = pcm16k, 640
    else:
        wire, frame = encode(Resampler(16000, 8000).process(pcm16k), MULAW_8K.encoding), 160
    whole = len(wire) // frame * frame
    return [wire[i : i + frame] for i in range(0, whole, frame)], frame


Pcm = np.ndarray[Any, np.dtype[np.float64]]
"""Float PCM samples, for the audio checks."""


def to_pcm(wire: bytes, carrier: str) -> Pcm:
    """Carrier-format audio back to float PCM at 8 kHz (the common rate of the check)."""
    if carrier == "vonage":
        pcm = Resampler(16000, 8000).process(wire)
    else:
        pcm = decode(wire, MULAW_8K.encoding)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def best_correlation(sent: Pcm, heard: Pcm) -> float:
    """Max normalized cross-correlation of ``heard`` against every alignment in ``sent``."""
    n = len(heard)
    if n == 0 or len(sent) < n:
        return 0.0
    size = 1 << (len(sent) + n).bit_length()
    corr = np.fft.irfft(np.fft.rfft(sent, size) * np.conj(np.fft.rfft(heard, size)), size)
    corr = corr[: len(sent) - n + 1]
    energy = np.concatenate(([0.0], np.cumsum(sent**2)))
    window = np.sqrt(np.maximum(energy[n:] - energy[:-n], 1e-9))
    return float(np.max(corr / (window * np.linalg.norm(heard))))


def credentials(carrier: str) -> CarrierCredentials:
    """The tenant's credentials for ``carrier`` (all sign with :data:`CREDENTIAL`)."""
    if carrier == "twilio":
        return TwilioCredentials(TWILIO_ACCOUNT, Secret(CREDENTIAL))
    if carrier == "plivo":
        return PlivoCredentials("MAPLIVOTEST0001", Secret(CREDENTIAL))
    return VonageCredentials("vonagekey1", Secret("api-secret"), Secret(CREDENTIAL))


@dataclass
class CarrierApi:
    """Stand-in carrier REST API: records every request (hang-ups)."""

    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, await request.read()))
        self.seen.set()
        return web.json_response({}, status=204 if request.method == "DELETE" else 200)


class Reachable(Protocol):
    """A gateway the carrier helpers can call: in this process or a subprocess."""

    @property
    def base(self) -> str:
        """The gateway's public base URL (``http://127.0.0.1:<port>``)."""
        ...


@dataclass
class GatewayUnderTest:
    """A running gateway and its stand-in carrier API."""

    settings: Settings
    app: web.Application
    api: CarrierApi

    @property
    def engine(self) -> Engine:
        return self.app[ENGINE]

    @property
    def base(self) -> str:
        return self.settings.base_url

    async def tenant(
        self,
        carrier: str,
        *,
        limit: int | None = None,
        credit_micros: int = 5_000_000,
        number: str = NUMBER,
        **agent: Any,
    ) -> tuple[Tenant, Agent]:
        """A tenant on ``carrier`` with a published agent (echo unless given) on ``number``."""
        directory, ledger = self.engine.state.directory, self.engine.state.ledger
        tenant = await directory.create_tenant("t-" + secrets.token_hex(3), limit)
        await directory.connect_carrier(tenant.id, credentials(carrier))
        options: dict[str, Any] = {"name": "agent", "published": True} | agent
        created = await directory.create_agent(tenant.id, **options)
        await directory.add_number(tenant.id, number, created.id)
        if credit_micros:
            await ledger.top_up(tenant.id, credit_micros)
        return await directory.get_tenant(tenant.id), created


@contextlib.asynccontextmanager
async def running_gateway(
    tmp: Path,
    *,
    links: LinkFactory = default_links,
    ops: OpsSettings | None = None,
    **overrides: Any,
) -> AsyncIterator[GatewayUnderTest]:
    """Start a gateway (and the carrier API stand-in) on loopback; stop both after."""
    api = CarrierApi()
    api_app = web.Application()
    api_app.router.add_route("*", "/{tail:.*}", api.handle)
    api_runner = web.AppRunner(api_app)
    await api_runner.setup()
    api_port = free_port()
    await web.TCPSite(api_runner, "127.0.0.1", api_port).start()
    api_url = f"http://127.0.0.1:{api_port}"
    port = free_port()
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": f"sqlite+aiosqlite:///{tmp}/gw.db",
        "port": port,
        "checkpoint_interval_s": 1,
        "reaper_stale_after_s": 30,
        "media_start_timeout_s": 1,
        "agent_grace_s": 1,
        "lease_ttl_s": 5,
        "lease_renew_interval_s": 1,
        "twilio_api_base_url": api_url,
        "plivo_api_base_url": api_url,
        "vonage_api_base_url": api_url,
    } | overrides
    settings = Settings(**values)
    app = create_app(settings, migrate=True, links=links, ops=ops)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield GatewayUnderTest(settings, app, api)
    finally:
        await runner.cleanup()
        await api_runner.cleanup()


def silence(carrier: str, ms: int) -> list[bytes]:
    """``ms`` of silence as carrier frames (μ-law 0xFF, or L16 zeros on Vonage)."""
    frame = b"\x00" * 640 if carrier == "vonage" else b"\xff" * 160
    return [frame] * (ms // 20)


async def final_record(gw: GatewayUnderTest, carrier: str, carrier_call_id: str) -> CallRecord:
    """The call's record once final (the ending sequence runs after the socket closes)."""
    call_id = call_id_for(carrier, carrier_call_id)
    for _ in range(200):
        record = await gw.engine.state.ledger.get_call(call_id)
        if record.status is not CallStatus.LIVE:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError("call was never finalized")


async def live_slots_once_released(gw: GatewayUnderTest, tenant_id: str) -> int:
    """The tenant's live-call slots once the ending sequence has had time to release them.

    Release is the ending sequence's last step, after the final record (docs/call-engine.md):
    a reader that sees the record final can ask Redis before it runs (the record's commit,
    on SQLite's committer thread, is visible to other connections before the finishing
    coroutine resumes). Waits up to 5 s for the count to reach 0; returns the last count.
    """
    count = await gw.engine.coordination.active_calls(tenant_id)
    for _ in range(100):
        if count == 0:
            break
        await asyncio.sleep(0.05)
        count = await gw.engine.coordination.active_calls(tenant_id)
    return count


def answer_params(carrier: str, carrier_call_id: str, to: str = NUMBER) -> dict[str, str]:
    """The fields each carrier posts to its answer URL."""
    if carrier == "twilio":
        return {
            "CallSid": carrier_call_id,
            "AccountSid": TWILIO_ACCOUNT,
            "From": CALLER,
            "To": to,
            "Direction": "inbound",
            "CallStatus": "ringing",
        }
    if carrier == "plivo":
        return {"CallUUID": carrier_call_id, "From": CALLER, "To": to, "Direction": "inbound"}
    return {"uuid": carrier_call_id, "to": to.lstrip("+"), "from": CALLER.lstrip("+")}


def new_call_id(carrier: str) -> str:
    """A carrier-shaped call id."""
    if carrier == "twilio":
        return "CA" + secrets.token_hex(16)
    return str(uuid.uuid4())


@dataclass
class Answer:
    """The gateway's answer document, parsed."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    media_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


def parse_answer(carrier: str, status: int, body: bytes, headers: Mapping[str, str]) -> Answer:
    """Find the media URL and stream parameters in an answer document."""
    answer = Answer(status, body, headers)
    if status != 200 or "X-Rymi-Refusal" in headers:
        return answer
    if carrier == "vonage":
        endpoint = json.loads(body)[0]["endpoint"][0]
        answer.media_url = endpoint["uri"]
        answer.parameters = dict(endpoint["headers"])
        return answer
    root = ET.fromstring(body)  # noqa: S314 - our own gateway's document, in a test
    stream = root.find(".//Stream")
    assert stream is not None
    if carrier == "twilio":
        answer.media_url = stream.get("url")
        answer.parameters = {p.get("name", ""): p.get("value", "") for p in stream}
    else:
        answer.media_url = (stream.text or "").strip()
        extra = stream.get("extraHeaders", "")
        answer.parameters = dict(pair.split("=", 1) for pair in extra.split(",") if pair)
    return answer


async def call_answer(
    gw: Reachable,
    http: aiohttp.ClientSession,
    carrier: str,
    carrier_call_id: str,
    *,
    to: str = NUMBER,
    credential: str = CREDENTIAL,
) -> Answer:
    """Make the carrier's signed answer request; returns the parsed answer."""
    adapter = carriers.get(carrier)
    request = adapter.sign_answer_request(
        f"{gw.base}/inbound/{carrier}",
        answer_params(carrier, carrier_call_id, to),
        credential,
        now=time.time(),
        nonce=secrets.token_hex(8),
    )
    async with http.request(
        request.method, request.url, headers=dict(request.headers), data=request.body or None
    ) as response:
        body = await response.read()
        return parse_answer(carrier, response.status, body, response.headers)


@dataclass
class PlayedCall:
    """One carrier media socket, played by the adapter's carrier side."""

    carrier: str
    ws: aiohttp.ClientWebSocketResponse
    side: CarrierSide
    received: list[WireMessage] = field(default_factory=list)
    heard: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    first_frame_at: float | None = None
    _player: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Send the carrier's first messages and start playing what comes back."""
        for message in self.side.open():
            await self._send(message)
        self._player = asyncio.create_task(self._play())

    async def _send(self, message: WireMessage) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def send_frames(
        self, frames: list[bytes], *, stop: Callable[[], bool] | None = None
    ) -> int:
        """Send frames at real time (20 ms each); returns how many were sent."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self.first_frame_at is None and frames:
            self.first_frame_at = time.monotonic()
        for i, frame in enumerate(frames):
            if self.ws.closed or (stop is not None and stop()):
                return i
            await self._send(self.side.audio(frame))
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))
        return len(frames)

    async def dtmf(self, digit: str) -> None:
        await self._send(self.side.dtmf(digit))

    async def hang_up(self) -> None:
        """The caller hangs up: the carrier's stop message(s), then the socket closes."""
        for message in self.side.stop():
            await self._send(message)
        await self.ws.close()
        await self.finish()

    async def finish(self) -> None:
        """Wait for the socket to close and the player to stop."""
        if self._player is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._player, timeout=10)

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read())
        last = loop.time()
        try:
            while not reader.done():
                await asyncio.sleep(0.02)
                now = loop.time()
                step = int((now - last) * 1000) // 20 * 20
                if step:
                    last += step / 1000
                    for reply in self.side.advance(step):
                        if not self.ws.closed:
                            await self._send(reply)
                    self.heard.extend(self.side.take_played())
        finally:
            await reader
            self.heard.extend(self.side.take_played())
            self.closed.set()

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            self.received.append(msg.data)
            for reply in self.side.receive(msg.data):
                await self._send(reply)

    def texts(self) -> list[dict[str, Any]]:
        """The gateway's JSON messages, decoded."""
        return [json.loads(m) for m in self.received if isinstance(m, str)]

    def audio_frames(self) -> list[bytes]:
        """Every audio payload the gateway sent, one per message."""
        if self.carrier == "vonage":
            return [m for m in self.received if isinstance(m, bytes)]
        key = "playAudio" if self.carrier == "plivo" else "media"
        return [
            base64.b64decode(t["media"]["payload"]) for t in self.texts() if t.get("event") == key
        ]


async def open_calls(
    gw: GatewayUnderTest, http: aiohttp.ClientSession, carrier: str, count: int
) -> tuple[list[str], list[PlayedCall]]:
    """``count`` calls answered, connected and opened (playing), with their carrier ids."""
    sids = [new_call_id(carrier) for _ in range(count)]
    calls = []
    for sid in sids:
        answer = await call_answer(gw, http, carrier, sid)
        call = await connect_media(gw, http, carrier, sid, answer)
        await call.open()
        calls.append(call)
    return sids, calls


async def connect_media(
    gw: Reachable,
    http: aiohttp.ClientSession,
    carrier: str,
    carrier_call_id: str,
    answer: Answer,
    *,
    credential: str = CREDENTIAL,
    media_url: str | None = None,
    autoping: bool = True,
) -> PlayedCall:
    """Open the media socket the answer points at, signed as the carrier signs it.

    ``autoping=False`` leaves the gateway's pings to the test (aiohttp answers them
    otherwise, unseen).
    """
    adapter = carriers.get(carrier)
    url = media_url or answer.media_url
    assert url is not None
    upgrade = adapter.sign_upgrade_request(
        url, credential, now=time.time(), nonce=secrets.token_hex(8)
    )
    ws = await http.ws_connect(url, headers=dict(upgrade.headers), autoping=autoping)
    params = {k: v for k, v in answer.parameters.items() if k != "call_uuid"}
    side = adapter.simulate_carrier(carrier_call_id, params)
    return PlayedCall(carrier, ws, side)
