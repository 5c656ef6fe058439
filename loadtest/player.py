"""One synthetic carrier call against the gateway, as the carrier plays it.

1. The answer webhook, built and signed by the carrier adapter's
   ``sign_answer_request`` with the tenant's credential (what Twilio, Plivo or Vonage
   would send), timed: the *answer latency*. A refusal is recorded by its
   ``X-Rymi-Refusal`` reason (or ``http_<status>``).
2. The media WebSocket at the URL the answer document names (checked against the
   target safety rule too), its upgrade signed by ``sign_upgrade_request``; the media
   is :func:`loadtest.media_socket.play_media`'s (picows, no task per frame):
3. the carrier's ``open`` messages, then one 20 ms frame of the speech fixture per
   :class:`~loadtest.schedule.FrameClock` deadline; after each frame the carrier's
   playback buffer advances by the real time that passed, in 20 ms steps, and the
   carrier's answers (mark echoes) go back, as the carrier does. Every message from
   the gateway goes through the carrier side (``receive``: marks, clears).
4. After the call's duration: the carrier's stop message(s) and a normal close.

Everything observed is kept per call in :class:`CallResult` (monotonic times; per-frame
values in compact arrays, a run keeps every frame's) for the accounting after the run;
the player does no statistics itself.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from picows import WSError

from gateway import carriers
from loadtest.audio import CarrierAudio
from loadtest.media_socket import play_media
from loadtest.safety import check_target
from loadtest.tenants import CarrierSetup

__all__ = [
    "CallPlan",
    "CallResult",
    "answer",
    "answer_params",
    "new_call_id",
    "parse_answer",
    "play_call",
]

_CALLER = "+14155550100"
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
_KEEP_AUDIO_S = 120  # heard audio kept per call for the content check (bounded memory)


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What one call does: carrier, when it starts (s from run start), how long it talks."""

    index: int
    carrier: str
    start_s: float
    duration_s: float


@dataclass
class CallResult:
    """What one call observed (monotonic seconds)."""

    plan: CallPlan
    carrier_call_id: str
    answer_status: int | None = None
    answer_ms: float | None = None
    refusal: str | None = None
    error: str | None = None
    opened_at: float | None = None
    """When the carrier's ``start`` went out."""
    ended_at: float | None = None
    """When the caller hung up (stop sent)."""
    sent_at: array[float] = field(default_factory=lambda: array("d"))
    """Send time of each caller frame."""
    lateness_ms: array[float] = field(default_factory=lambda: array("d"))
    """How late each frame went out after its deadline (the tester's own lag)."""
    frame_samples: int = 0
    received_at: array[float] = field(default_factory=lambda: array("d"))
    """Receive time of each gateway audio message."""
    received_samples: array[int] = field(default_factory=lambda: array("I"))
    """Samples of each gateway audio message, at the carrier's rate."""
    heard: bytearray = field(default_factory=bytearray)
    clears: int = 0
    marks: int = 0
    """Marks the gateway sent (the carrier side echoes them when played)."""
    close_code: int | None = None
    completed: bool = False
    """Answered, streamed its whole duration and hung up normally."""
    local_port: int | None = None
    """The media socket's own port (to find its packets in a wire capture)."""

    @property
    def received(self) -> list[tuple[float, int]]:
        """Each gateway audio message: receive time, samples at the carrier's rate."""
        return list(zip(self.received_at, self.received_samples, strict=True))

    @property
    def answered(self) -> bool:
        """Whether the gateway answered with a media stream."""
        return self.answer_status == 200 and self.refusal is None and self.error is None


def answer_params(carrier: str, call_id: str, to: str, account_id: str) -> dict[str, str]:
    """The fields each carrier posts to its answer URL (docs/carriers.md)."""
    if carrier == "twilio":
        return {
            "CallSid": call_id,
            "AccountSid": account_id,
            "From": _CALLER,
            "To": to,
            "Direction": "inbound",
            "CallStatus": "ringing",
        }
    if carrier == "plivo":
        return {"CallUUID": call_id, "From": _CALLER, "To": to, "Direction": "inbound"}
    return {"uuid": call_id, "to": to.lstrip("+"), "from": _CALLER.lstrip("+")}


def parse_answer(carrier: str, body: bytes) -> tuple[str, dict[str, str]]:
    """The media URL and stream parameters in an answer document.

    Raises:
        ValueError: the document has no stream.
    """
    try:
        if carrier == "vonage":
            endpoint = json.loads(body)[0]["endpoint"][0]
            return str(endpoint["uri"]), {str(k): str(v) for k, v in endpoint["headers"].items()}
        # The target's own answer document, on a loopback or operator-named host.
        root = ET.fromstring(body)  # noqa: S314
    except (ValueError, KeyError, IndexError, TypeError, ET.ParseError) as exc:
        raise ValueError(f"{carrier} answer: expected a stream document ({exc})") from None
    stream = root.find(".//Stream")
    if stream is None:
        raise ValueError(f"{carrier} answer: expected a <Stream>")
    if carrier == "twilio":
        url = stream.get("url", "")
        return url, {p.get("name", ""): p.get("value", "") for p in stream}
    extra = stream.get("extraHeaders", "")
    params = dict(pair.split("=", 1) for pair in extra.split(",") if "=" in pair)
    return (stream.text or "").strip(), params


def new_call_id(carrier: str) -> str:
    """A carrier-shaped call id."""
    return "CA" + secrets.token_hex(16) if carrier == "twilio" else str(uuid.uuid4())


async def play_call(
    http: aiohttp.ClientSession,
    plan: CallPlan,
    setup: CarrierSetup,
    audio: CarrierAudio,
    *,
    public_url: str,
    allowed: tuple[str, ...] = (),
    keep_audio: bool = False,
    stopping: Callable[[], bool] = lambda: False,
) -> CallResult:
    """Play one call; never raises for the gateway's behaviour (it is recorded)."""
    result = CallResult(plan, new_call_id(plan.carrier), frame_samples=audio.frame_samples)
    adapter = carriers.get(plan.carrier)
    try:
        media = await answer(http, result, setup, public_url)
        if media is None:
            return result
        url, params = media
        check_target(url.replace("wss://", "https://").replace("ws://", "http://"), allowed)
        upgrade = adapter.sign_upgrade_request(
            url, setup.credential, now=time.time(), nonce=secrets.token_hex(8)
        )
        side = adapter.simulate_carrier(
            result.carrier_call_id, {k: v for k, v in params.items() if k != "call_uuid"}
        )
        if hasattr(side, "account_sid"):
            side.account_sid = setup.account_id
        keep = int(_KEEP_AUDIO_S * audio.format.bytes_per_second) if keep_audio else 0
        await play_media(url, upgrade.headers, side, result, audio, keep=keep, stopping=stopping)
    except (aiohttp.ClientError, WSError, OSError, TimeoutError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return result


async def answer(
    http: aiohttp.ClientSession, result: CallResult, setup: CarrierSetup, public_url: str
) -> tuple[str, dict[str, str]] | None:
    carrier = result.plan.carrier
    request = carriers.get(carrier).sign_answer_request(
        f"{public_url}/inbound/{carrier}",
        answer_params(carrier, result.carrier_call_id, setup.number, setup.account_id),
        setup.credential,
        now=time.time(),
        nonce=secrets.token_hex(8),
    )
    began = time.monotonic()
    async with http.request(
        request.method,
        request.url,
        headers=dict(request.headers),
        data=request.body or None,
        timeout=_HTTP_TIMEOUT,
    ) as response:
        body = await response.read()
    result.answer_ms = (time.monotonic() - began) * 1000
    result.answer_status = response.status
    refusal = response.headers.get("X-Rymi-Refusal")
    if refusal or response.status != 200:
        result.refusal = refusal or f"http_{response.status}"
        return None
    return parse_answer(carrier, body)
