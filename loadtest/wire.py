"""The gateway's added latency as the wire sees it: loopback packets, kernel timestamps.

The tester's end-to-end figure runs from its ``send()`` to the agent server's read of
the gateway's frame. It includes the time the agent server's loop took to come round to
the socket, and both peers share one CPU, so under load it measures them as well as the
gateway. The gateway's own histograms leave out the time a frame waits in the gateway's
socket before its loop reads it. This module measures what lies between, as a packet
capture would: each caller frame from the moment its TCP segment crossed the loopback
device to the moment the gateway's frame to the agent crossed it, both stamped by the
kernel (``SO_TIMESTAMPNS`` on an ``AF_PACKET`` socket: :mod:`loadtest.wire_capture`).
That is the wait in the gateway's socket, its work and its ``send()``, and nothing of
the peers.

Sans I/O: :func:`read_pcap` parses a capture's bytes, :func:`tcp_segments` the packets,
:class:`FrameReader` one direction of one TCP connection into WebSocket frames (RFC
6455 §5.2), and :func:`inbound_latencies` pairs one call's caller frames with the
gateway's frames to its agent.

**Pairing.** The gateway writes exactly one binary frame to the agent per caller frame,
in order, from the callback that read it (docs/call-engine.md), so the ``i``-th caller
frame of the capture is the ``(i + d)``-th agent frame for one offset ``d`` (the capture
starts mid-call on both connections). Causality fixes ``d``: a frame cannot leave before
the caller frame it carries arrived, and caller frames come 20 ms apart, so any smaller
offset puts some agent frame before its caller frame. The smallest offset that never
does is the pairing. Its limit: if the gateway took longer than a frame's 20 ms over
*every* frame of the capture (a saturated gateway), an offset one frame too small also
keeps causality, and the figures would read 20 ms low. The end-to-end figures of the
same run show such a gateway plainly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.stats import summarize

__all__ = [
    "LINKTYPE_ETHERNET",
    "PCAP_NS_MAGIC",
    "FrameReader",
    "Segment",
    "WireCapture",
    "WsFrame",
    "caller_audio",
    "frames_by_stream",
    "inbound_latencies",
    "pcap_header",
    "pcap_record",
    "read_pcap",
    "tcp_segments",
    "wire_figures",
]

PCAP_NS_MAGIC = 0xA1B23C4D
"""pcap with nanosecond timestamps (the libpcap file format, "nanosecond-resolution")."""
LINKTYPE_ETHERNET = 1
"""``AF_PACKET`` raw frames on ``lo`` carry a (zeroed) 14-byte Ethernet header."""
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETH_LEN = 14
_IPV4 = 0x0800
_TCP = 6
_MAX_OFFSET = 8
"""Offsets tried when pairing: the capture starts within a few frames on both sides."""

_TEXT, _BINARY = 1, 2
_OPCODES = frozenset({0, 1, 2, 8, 9, 10})


def pcap_header(snaplen: int = 262_144) -> bytes:
    """The file header of a nanosecond pcap of Ethernet frames."""
    return _GLOBAL.pack(PCAP_NS_MAGIC, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def pcap_record(at_ns: int, frame: bytes, original_length: int | None = None) -> bytes:
    """One packet's record: its kernel timestamp (ns since the epoch) and its bytes."""
    seconds, nanos = divmod(at_ns, 1_000_000_000)
    length = len(frame) if original_length is None else original_length
    return _RECORD.pack(seconds, nanos, len(frame), length) + frame


def read_pcap(data: bytes) -> Iterator[tuple[float, bytes]]:
    """Each packet of a nanosecond pcap: (Unix time in s, the frame's bytes).

    Raises:
        ValueError: not a little-endian nanosecond pcap of Ethernet frames.
    """
    if len(data) < _GLOBAL.size:
        raise ValueError("not a pcap file: shorter than its header")
    magic, _, _, _, _, _, link = _GLOBAL.unpack_from(data)
    if magic != PCAP_NS_MAGIC or link != LINKTYPE_ETHERNET:
        raise ValueError(f"expected a nanosecond pcap of Ethernet frames, got {magic:#x}/{link}")
    offset = _GLOBAL.size
    while offset + _RECORD.size <= len(data):
        seconds, nanos, length, _ = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        yield seconds + nanos / 1e9, data[offset : offset + length]
        offset += length


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment with data, as it crossed the loopback device."""

    at: float
    src: int
    """Source port."""
    dst: int
    """Destination port."""
    seq: int
    payload: bytes


def tcp_segments(packets: Iterable[tuple[float, bytes]]) -> Iterator[Segment]:
    """The IPv4 TCP segments that carry data (pure ACKs and everything else skipped)."""
    for at, frame in packets:
        if len(frame) < _ETH_LEN + 20 or int.from_bytes(frame[12:14]) != _IPV4:
            continue
        ip = _ETH_LEN
        if frame[ip + 9] != _TCP:
            continue
        header = (frame[ip] & 0x0F) * 4
        total = int.from_bytes(frame[ip + 2 : ip + 4])
        tcp = ip + header
        src, dst, seq = struct.unpack_from("!HHI", frame, tcp)
        data = tcp + (frame[tcp + 12] >> 4) * 4
        end = min(ip + total, len(frame))
        if end > data:
            yield Segment(at, src, dst, seq, frame[data:end])


@dataclass(frozen=True, slots=True)
class WsFrame:
    """A WebSocket frame completed on the wire."""

    at: float
    """When the segment that completed it crossed the device (Unix s)."""
    opcode: int
    length: int
    """Payload bytes."""
    head: bytes
    """The payload's first bytes, unmasked (enough to tell a ``media`` message)."""


_HEAD = 24


@dataclass(slots=True)
class FrameReader:
    """One direction of one TCP connection, read into WebSocket frames.

    The capture starts mid-connection: the first segment is taken as starting a frame
    only if its header is a plausible one (FIN set, no RSV bit, a known opcode);
    otherwise segments are skipped until one is. A gap in the sequence numbers (the
    capture dropped a packet) ends the reading of this stream: frame boundaries after it
    cannot be trusted.
    """

    next_seq: int | None = None
    broken: bool = False
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, segment: Segment) -> list[WsFrame]:
        """The frames this segment completes."""
        if self.broken:
            return []
        payload = segment.payload
        if self.next_seq is None:
            if not _plausible(payload):
                return []
        else:
            ahead = (segment.seq - self.next_seq) % (1 << 32)
            if ahead >= 1 << 31:  # (partly) a retransmission of what was read
                behind = (1 << 32) - ahead
                if behind >= len(payload):
                    return []
                payload = payload[behind:]
            elif ahead:
                self.broken = True
                return []
        self.next_seq = (segment.seq + len(segment.payload)) % (1 << 32)
        self.buffer += payload
        return self._frames(segment.at)

    def _frames(self, at: float) -> list[WsFrame]:
        out: list[WsFrame] = []
        buf = self.buffer
        start = 0
        while True:
            parsed = _parse_header(buf, start)
            if parsed is None:
                break
            opcode, length, mask, body = parsed
            if body + length > len(buf):
                break
            head = bytes(buf[body : body + min(length, _HEAD)])
            if mask is not None:
                head = bytes(b ^ mask[i % 4] for i, b in enumerate(head))
            out.append(WsFrame(at, opcode, length, head))
            start = body + length
        del buf[:start]
        return out


def _plausible(payload: bytes) -> bool:
    return len(payload) >= 2 and payload[0] & 0xF0 == 0x80 and payload[0] & 0x0F in _OPCODES


def _parse_header(buf: bytearray, at: int) -> tuple[int, int, bytes | None, int] | None:
    """(opcode, payload length, mask key, payload offset) of the frame at ``at``, or None
    while its header is incomplete (RFC 6455 §5.2)."""
    if len(buf) - at < 2:
        return None
    first, second = buf[at], buf[at + 1]
    length, offset = second & 0x7F, at + 2
    if length == 126:
        if len(buf) - offset < 2:
            return None
        length, offset = int.from_bytes(buf[offset : offset + 2]), offset + 2
    elif length == 127:
        if len(buf) - offset < 8:
            return None
        length, offset = int.from_bytes(buf[offset : offset + 8]), offset + 8
    mask = None
    if second & 0x80:
        if len(buf) - offset < 4:
            return None
        mask, offset = bytes(buf[offset : offset + 4]), offset + 4
    return first & 0x0F, length, mask, offset


def frames_by_stream(segments: Iterable[Segment]) -> dict[tuple[int, int], list[WsFrame]]:
    """Every (source port, destination port) stream's WebSocket frames, in order."""
    readers: dict[tuple[int, int], FrameReader] = {}
    frames: dict[tuple[int, int], list[WsFrame]] = {}
    for segment in segments:
        key = (segment.src, segment.dst)
        reader = readers.get(key)
        if reader is None:
            reader = readers[key] = FrameReader()
            frames[key] = []
        frames[key].extend(reader.feed(segment))
    return frames


def caller_audio(frames: Sequence[WsFrame], binary: bool) -> list[float]:
    """When each caller audio frame arrived: binary frames (Vonage), or the text
    frames that are ``media`` events (Twilio, Plivo)."""
    if binary:
        return [f.at for f in frames if f.opcode == _BINARY]
    media = b'{"event":"media"'
    return [
        f.at for f in frames if f.opcode == _TEXT and f.head.replace(b" ", b"").startswith(media)
    ]


def inbound_latencies(caller: Sequence[float], agent: Sequence[float]) -> list[float] | None:
    """Each caller frame's time to the gateway's frame to the agent, in ms (the module
    docstring's pairing), or None when no offset keeps causality for most frames."""
    for offset in range(-_MAX_OFFSET, _MAX_OFFSET + 1):
        pairs = [
            (agent[i + offset], at) for i, at in enumerate(caller) if 0 <= i + offset < len(agent)
        ]
        if len(pairs) < max(1, len(caller) // 2):
            continue
        if all(sent >= arrived for sent, arrived in pairs):
            return [(sent - arrived) * 1000 for sent, arrived in pairs]
    return None


@dataclass(frozen=True, slots=True)
class WireCapture:
    """What a wire capture gave: the counts of :mod:`loadtest.wire_capture`, and every
    stream's frames by (source port, destination port)."""

    seconds: float
    counts: dict[str, float]
    streams: dict[tuple[int, int], list[WsFrame]]


def wire_figures(
    capture: WireCapture,
    calls: Iterable[tuple[int | None, int | None, bool]],
) -> dict[str, Any]:
    """The ``wire`` section of a run report.

    Args:
        capture: the capture.
        calls: per answered call, the tester's port of its media socket, the gateway's
            port of its agent connection, and whether its caller audio is binary.
    """
    by_source = {key[0]: key for key in capture.streams}
    latencies: list[float] = []
    paired = unpaired = 0
    for carrier_port, agent_port, binary in calls:
        if carrier_port is None or agent_port is None:
            continue
        caller_key, agent_key = by_source.get(carrier_port), by_source.get(agent_port)
        if caller_key is None or agent_key is None:
            continue
        caller = caller_audio(capture.streams[caller_key], binary)
        agent = [f.at for f in capture.streams[agent_key] if f.opcode == _BINARY]
        matched = inbound_latencies(caller, agent) if caller else None
        if matched is None:
            unpaired += 1
            continue
        paired += 1
        latencies.extend(matched)
    return {
        "seconds": capture.seconds,
        "capture": capture.counts,
        "calls_paired": paired,
        "calls_unpaired": unpaired,
        "in": summarize(latencies).as_dict()
        | {"within_0.5_ms": _share(latencies, 0.5), "within_2_ms": _share(latencies, 2.0)},
    }


def _share(values: Sequence[float], bound: float) -> float | None:
    return round(sum(1 for v in values if v <= bound) / len(values), 5) if values else None
