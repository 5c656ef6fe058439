"""The reference agent server's calls, sans I/O: the start policy, the core, the record.

Both edges of the agent server run every call through :class:`AgentCall`, so they
cannot differ in what they answer or record: the picows server the process runs
(:mod:`loadtest.agent_picows`, the cheaper per frame) and the aiohttp application for
in-process use (:func:`loadtest.agent_server.make_app`, the peer of the gateway's tests).
An edge authorizes the upgrade (:func:`authorize`), hands over the first message
(:meth:`AgentCall.begin`), then each message, and writes what comes back.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Final

from gateway.bridge.builtin import AgentCore
from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentItem
from gateway.bridge.protocol import (
    PROTOCOL,
    Error,
    Start,
    Stop,
    UnknownMessage,
    decode_gateway_message,
    encode_message,
    verify_agent_token,
)
from gateway.errors import AgentError
from loadtest.agent_pattern import PatternCore, ProbeCore, tone
from loadtest.audio import load_wav
from rymi_codecs import Resampler

__all__ = [
    "TAKE_LIMIT",
    "AgentCall",
    "AgentServerConfig",
    "CallLog",
    "CallRecord",
    "CallTiming",
    "authorize",
    "core_factory",
    "records_by_call",
    "stats_json",
]

_MAX_RECORDS: Final = 100_000  # per-call records kept for /stats (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class AgentServerConfig:
    """How the agent server behaves."""

    secret: bytes
    """The shared secret the gateway signs its bearer tokens with (>= 32 bytes)."""
    mode: str = "echo"
    """``echo``, ``pattern`` or ``probe``."""
    talk_ms: int = 2000
    listen_ms: int = 2000
    tone_hz: float = 440.0
    fixture: Path | None = None
    """WAV file to talk in pattern mode instead of the tone."""
    hangup_after_ms: int | None = None
    start_timeout_s: float = 5.0
    """The gateway must send ``start`` this soon after the handshake."""
    timing: bool = False
    """Record the time and size of every audio message (see :class:`CallTiming`)."""


@dataclass(slots=True)
class CallTiming:
    """When each audio message came and went (``time.monotonic()`` seconds, bytes).

    Compact arrays: a call keeps four numbers per 20 ms frame.
    """

    start_at: float
    """When ``start`` arrived."""
    in_at: array[float] = field(default_factory=lambda: array("d"))
    in_bytes: array[int] = field(default_factory=lambda: array("I"))
    out_at: array[float] = field(default_factory=lambda: array("d"))
    out_bytes: array[int] = field(default_factory=lambda: array("I"))


@dataclass(slots=True)
class CallRecord:
    """One call as the agent saw it."""

    call_id: str
    agent_id: str
    mode: str
    started_at: float
    """Unix time of ``start``."""
    duration_s: float = 0.0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    messages_out: int = 0
    errors_in: int = 0
    stop_reason: str | None = None
    close_code: int | None = None
    """The close code the gateway sent (or answered ours with)."""
    core: dict[str, Any] = field(default_factory=dict)
    timing: CallTiming | None = None
    peer_port: int | None = None
    """The gateway's port of this call's connection (to find it in a wire capture)."""

    def as_json(self) -> dict[str, Any]:
        """The record as JSON values (``/stats``, ``--stats-file``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["core"] = dict(self.core)
        timing = self.timing
        if timing is not None:
            out["timing"] = {"start_at": timing.start_at} | {
                name: _pack(getattr(timing, name)) for name in _TIMING_ARRAYS
            }
        return out


_TIMING_ARRAYS: Final = {"in_at": "d", "in_bytes": "I", "out_at": "d", "out_bytes": "I"}
"""A record's timing arrays and their type codes, each sent as base64 of its raw bytes.

As JSON numbers, the four arrays of the calls a soak takes at once (a few hundred calls
of 3 000 frames) took the agent server's loop ~0.5-0.9 s to write. Every live call's
echo waited that long, and calls hanging up meanwhile lost their last frames. Raw
bytes are one copy each way."""


def _pack(values: array[Any]) -> str:
    """``values`` as base64 of little-endian bytes (the wire order, whatever the host's)."""
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _unpack(typecode: str, text: str) -> array[Any]:
    values = array(typecode, base64.b64decode(text))
    if sys.byteorder == "big":
        values.byteswap()
    return values


def records_by_call(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of a ``/stats`` answer by call id, their timing arrays unpacked."""
    records: dict[str, dict[str, Any]] = {}
    for record in stats.get("calls", []):
        timing = record.get("timing")
        if timing is not None:
            for name, typecode in _TIMING_ARRAYS.items():
                timing[name] = _unpack(typecode, timing[name])
        records[str(record["call_id"])] = record
    return records


class CallLog:
    """The records of ended calls (the newest :data:`_MAX_RECORDS`), and a way to wait."""

    def __init__(self) -> None:
        self.records: deque[CallRecord] = deque(maxlen=_MAX_RECORDS)
        self.total = 0
        """Calls ended since start, including records no longer kept."""
        self._changed = asyncio.Event()

    def add(self, record: CallRecord) -> None:
        """Keep a record and wake the waiters."""
        self.records.append(record)
        self.total += 1
        self._changed.set()

    async def wait_for(self, total: int) -> None:
        """Wait until ``total`` calls have ended."""
        while self.total < total:
            self._changed.clear()
            await self._changed.wait()


TAKE_LIMIT: Final = 25
"""Records one ``/stats/take`` returns at most, oldest first (``more``: ask again). A
record of a minute's call is ~100 kB to write: a few hundred at once held this server's
loop, and so every call's echo, for tens of milliseconds."""


def stats_json(calls: CallLog, active: int, *, take: bool = False) -> dict[str, Any]:
    """``active`` calls, calls ``ended`` since start, and the records kept.

    ``take``: at most :data:`TAKE_LIMIT` of them, the oldest, which are then forgotten;
    ``more`` says whether records are left to take.
    """
    kept = calls.records
    if not take:
        return {"active": active, "ended": calls.total, "calls": [r.as_json() for r in kept]}
    taken = [kept.popleft().as_json() for _ in range(min(TAKE_LIMIT, len(kept)))]
    return {"active": active, "ended": calls.total, "calls": taken, "more": bool(kept)}


def core_factory(config: AgentServerConfig) -> Callable[[Start], AgentCore]:
    """The per-call core builder for ``config.mode``.

    Raises:
        ValueError: an unknown mode, or an unusable fixture.
    """
    if config.mode == "echo":
        return EchoCore
    if config.mode == "probe":
        return ProbeCore
    if config.mode != "pattern":
        raise ValueError(f"expected mode echo, pattern or probe, got {config.mode!r}")
    raw, raw_rate = load_wav(config.fixture) if config.fixture else (b"", 0)
    sources: dict[int, bytes] = {}

    def source(rate: int) -> bytes:
        if rate not in sources:
            if not raw:
                sources[rate] = tone(rate, config.tone_hz)
            else:
                resampler = Resampler(raw_rate, rate)
                sources[rate] = resampler.process(raw) + resampler.flush()
        return sources[rate]

    def build(start: Start) -> AgentCore:
        return PatternCore(
            start,
            source(start.agent_audio.sample_rate),
            talk_ms=config.talk_ms,
            listen_ms=config.listen_ms,
            hangup_after_ms=config.hangup_after_ms,
        )

    return build


def authorize(authorization: str, secret: bytes, agent_id: str) -> str | None:
    """The call id in a valid ``Authorization: Bearer`` token for ``agent_id`` (docs/
    agent-protocol.md §1.1); None if missing or invalid (HTTP 401, RFC 6750 §3.1)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = verify_agent_token(token.strip(), secret, agent_id=agent_id, now=time.time())
    except AgentError:
        return None
    return claims.call_id


class AgentCall:
    """One call on the agent's side, from its first message to its record.

    Args:
        config: the server's settings.
        factory: builds the call's core from its ``start``.
        call_id: the call the bearer token names.
        agent_id: the agent of the URL (the token's audience).
    """

    def __init__(
        self,
        config: AgentServerConfig,
        factory: Callable[[Start], AgentCore],
        call_id: str,
        agent_id: str,
    ) -> None:
        self._config = config
        self._factory = factory
        self._ids = (call_id, agent_id)
        self._began = 0.0
        self.peer_port: int | None = None
        """The gateway's end of the connection (set by the server when it connects)."""
        self.record: CallRecord | None = None
        """Set by a valid ``start``."""
        self._core: AgentCore | None = None

    def begin(self, first: str | None) -> bool:
        """The first message (its text; None: none came, or not text) must be a ``start``
        for the token's call, in our major version; False: close with 1008 (RFC 6455
        §7.4.1: the gateway broke this agent's policy, docs §4 "protocol")."""
        try:
            start = decode_gateway_message(first) if first is not None else None
        except AgentError:
            start = None
        if (
            not isinstance(start, Start)
            or start.protocol != PROTOCOL
            or (start.call_id, start.agent_id) != self._ids
        ):
            return False
        self._began = time.monotonic()
        self.record = CallRecord(start.call_id, start.agent_id, self._config.mode, time.time())
        self.record.peer_port = self.peer_port
        if self._config.timing:
            self.record.timing = CallTiming(self._began)
        self._core = self._factory(start)
        return True

    def audio(self, data: bytes) -> list[AgentItem]:
        """One binary message (caller audio): what the core answers."""
        record, core = self.record, self._core
        if record is None or core is None:
            raise RuntimeError("audio before start")
        timing = record.timing
        if timing is not None:
            timing.in_at.append(time.monotonic())
            timing.in_bytes.append(len(data))
        record.frames_in += 1
        record.bytes_in += len(data)
        return core.receive_audio(data)

    def text(self, text: str) -> tuple[str | None, list[AgentItem]]:
        """One text message: the ``error`` to answer a malformed one with, and what the
        core answers (unknown types and a second ``start`` are skipped)."""
        record, core = self.record, self._core
        if record is None or core is None:
            raise RuntimeError("a message before start")
        try:
            message = decode_gateway_message(text)
        except AgentError as exc:
            record.errors_in += 1
            return encode_message(Error(code=exc.reason, message=str(exc))), []
        if isinstance(message, UnknownMessage | Start):
            return None, []
        record.messages_in += 1
        if isinstance(message, Stop):
            record.stop_reason = message.reason
        return None, core.receive_message(message)

    def outgoing(self, item: AgentItem) -> bytes | str:
        """What the edge writes for one item of the core's (counted as sent)."""
        record = self.record
        if record is None:
            raise RuntimeError("output before start")
        if isinstance(item, bytes):
            record.frames_out += 1
            record.bytes_out += len(item)
            timing = record.timing
            if timing is not None:
                timing.out_at.append(time.monotonic())
                timing.out_bytes.append(len(item))
            return item
        record.messages_out += 1
        return encode_message(item)

    def end(self, close_code: int | None) -> CallRecord | None:
        """The call's record, complete (None: it never started)."""
        record = self.record
        if record is None:
            return None
        record.duration_s = round(time.monotonic() - self._began, 3)
        record.close_code = close_code
        record.core = _core_stats(self._core)
        return record


def _core_stats(core: AgentCore | None) -> dict[str, Any]:
    stats = getattr(core, "stats", None)
    snapshot = stats() if callable(stats) else None
    if is_dataclass(snapshot) and not isinstance(snapshot, type):
        return asdict(snapshot)
    return {}
