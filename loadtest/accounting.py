"""Frame accounting of one call, sans I/O: latency by position, loss, duplicates, order.

**Identity by position.** Carrier and agent audio are fixed-size 20 ms frames carried in
order over TCP (WebSocket, RFC 6455), so a frame's identity is its position in its
stream: the ``n``-th sample the sender sent is the ``n * ratio``-th sample the receiver
gets, whatever the codecs did to the sample values (μ-law, PCM16, resampling). The
gateway's rymi_codecs resampler emits exactly ``ratio`` output samples per input sample
from the first frame on (its filter delay shifts the *content* by a fraction of a frame,
not the count), so positions map one to one. A marker stamped into the samples would
not survive μ-law and a polyphase filter reliably; a position does.

* :func:`match_stream`: for each received message, the sent message that completed the
  samples it carries → the latency the path added; frames sent and never received
  (loss), or received beyond what was sent (excess: duplication).
* :func:`content_check`: position alone cannot see a frame duplicated *and* one lost (the
  count is unchanged), nor two frames swapped. The content can: each received 20 ms
  block is correlated with the sent block at its expected position and, when that
  fails, with its neighbours, so a block that sounds like an earlier one is a
  duplicate, one that sounds like a skipped one arrived out of order, and speech never
  heard is lost. Silent blocks identify nothing and are skipped.
* :func:`pacing_jitter`: the carrier's ear: how far the gap between two consecutive
  gateway frames is from 20 ms, within a spurt of agent speech.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ContentCheck", "StreamMatch", "content_check", "match_stream", "pacing_jitter"]

Pcm = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class StreamMatch:
    """One direction of one call, matched by position."""

    latencies_ms: list[float]
    """Per received message: receive time minus the send time of the frame completing it."""
    service_ms: list[float]
    """Per received message: the time beyond what pacing allowed, i.e. the gateway's work
    and scheduling, not its playout queue. An ideal pacer with a lead of ``L`` frames
    (docs/call-engine.md), working in zero time, sends frame ``k`` at
    ``allowed(k) = max(sent(k), ear(k-1) - (L - 1) * duration)``, where its ear plays
    each frame from ``max(allowed(k), ear(k-1))`` to ``ear(k)``; the service latency is
    ``max(0, received(k) - allowed(k))``. Empty unless ``receiver_rate`` is given."""
    sent_at: list[float]
    """Per latency counted: the send time of its frame (monotonic s), so that a report
    can take the figures of a window apart (e.g. all calls up, no set-up running)."""
    sent_frames: int
    """Frames sent in the accounted window."""
    received_frames: int
    """Frames' worth of samples received (in sender frames)."""
    lost_frames: int
    """Sent in the window, never received."""
    excess_frames: int
    """Received beyond what was sent (a duplicate the count can see)."""


def match_stream(
    sent: Sequence[tuple[float, int]],
    received: Sequence[tuple[float, int]],
    *,
    ratio: float,
    frame_samples: int,
    count_from: float = -math.inf,
    count_until: float = math.inf,
    receiver_rate: int | None = None,
    lead_frames: int = 3,
) -> StreamMatch:
    """Match received messages to sent ones by sample position.

    Args:
        sent: ``(monotonic send time, samples)`` per sent message, in order.
        received: ``(monotonic receive time, samples)`` per received message, in order,
            samples at the receiver's rate.
        ratio: receiver rate / sender rate (16 kHz agent from an 8 kHz carrier: 2).
        frame_samples: samples of one sender frame (to count frames).
        count_from: latencies of frames sent before this are not counted (e.g. audio the
            gateway holds while the agent connects: that wait is the connect time).
        count_until: frames sent after this are not counted as lost (still in flight
            when the call ended).
        receiver_rate: the receiver's sample rate, to compute ``service_ms``.
        lead_frames: the sender-side pacer's lead (``RYMI_PACER_LEAD_FRAMES``).

    Raises:
        ValueError: ``ratio`` or ``frame_samples`` not > 0.
    """
    if not ratio > 0 or frame_samples <= 0:
        raise ValueError("expected ratio > 0 and frame_samples > 0")
    ends: list[int] = []
    total = 0
    for _, samples in sent:
        total += samples
        ends.append(total)
    latencies: list[float] = []
    service: list[float] = []
    counted_sent_at: list[float] = []
    got = 0.0
    ear = -math.inf  # when the ideal pacer's listener has played the previous message
    for at, samples in received:
        got += samples / ratio
        duration = samples / receiver_rate if receiver_rate else 0.0
        # The first sent message whose end covers the last sample of this one.
        index = bisect.bisect_left(ends, math.ceil(got - 1e-6))
        if index >= len(ends):
            continue  # beyond what was sent: counted as excess below
        sent_at = sent[index][0]
        allowed = max(sent_at, ear - (lead_frames - 1) * duration)
        ear = max(allowed, ear) + duration
        if count_from <= sent_at:
            latencies.append((at - sent_at) * 1000)
            counted_sent_at.append(sent_at)
            if receiver_rate:
                service.append(max(0.0, at - allowed) * 1000)
    counted = [end for (at, _), end in zip(sent, ends, strict=True) if at <= count_until]
    due = counted[-1] if counted else 0
    lost = max(0, math.floor((due - min(got, total)) / frame_samples + 1e-9))
    # Less than a frame beyond is a resampler's tail flushed at the end, not a duplicate.
    excess = max(0, math.floor((got - total) / frame_samples + 1e-9))
    return StreamMatch(
        latencies_ms=latencies,
        service_ms=service,
        sent_at=counted_sent_at,
        sent_frames=len(counted),
        received_frames=math.floor(got / frame_samples + 1e-9),
        lost_frames=lost,
        excess_frames=excess,
    )


def pacing_jitter(
    arrivals: Sequence[float], *, period: float = 0.02, gap: float = 0.1, skip: int = 3
) -> list[float]:
    """``|inter-arrival - period|`` in ms of consecutive frames within spurts.

    A spurt starts after a silence longer than ``gap`` seconds; the gateway sends its
    first ``skip`` frames (the pacer's lead) at once, so their gaps say nothing about
    pacing and are left out.
    """
    out: list[float] = []
    in_spurt = 0
    for before, after in itertools.pairwise(arrivals):
        delta = after - before
        if delta > gap:
            in_spurt = 0
            continue
        in_spurt += 1
        if in_spurt >= skip:
            out.append(abs(delta - period) * 1000)
    return out


@dataclass(frozen=True, slots=True)
class ContentCheck:
    """Blocks of received audio identified by their content."""

    lag: int
    """Samples the received content trails the sent content (filter delays)."""
    checked: int
    """Received blocks loud enough to identify."""
    in_place: int
    duplicated: int
    reordered: int
    lost: int
    """Clearly loud sent blocks within the heard span that were never heard."""
    unidentified: int
    """Loud received blocks matching nothing sent near their position."""


def content_check(
    sent: Pcm,
    heard: Pcm,
    block: int,
    *,
    max_lag: int = 400,
    search: int = 25,
    min_rms: float = 300.0,
    threshold: float = 0.9,
) -> ContentCheck:
    """Identify each loud ``block``-sample block of ``heard`` in ``sent`` (same rate).

    ``heard[n]`` is expected to be ``sent[n - lag]`` for one ``lag`` in ``0..max_lag``
    (found by cross-correlation). Each block is compared to its expected source block
    (the one after the previous block's source) and, if the normalized correlation is
    below ``threshold``, to the ``search`` blocks either side.
    """
    if block <= 0 or len(heard) < block or len(sent) < block:
        return ContentCheck(0, 0, 0, 0, 0, 0, 0)
    lag = _lag(sent, heard, max_lag)
    shifted = np.concatenate((np.zeros(lag), sent))
    sources = len(shifted) // block
    src_blocks = shifted[: sources * block].reshape(sources, block)
    src_norms = np.linalg.norm(src_blocks, axis=1)
    # Hysteresis: a source block counts as lost only if clearly loud (2x), so a block
    # near the threshold heard just below it (filters, μ-law) is not a false loss.
    loud_src = src_norms / math.sqrt(block) >= 2 * min_rms
    seen: set[int] = set()
    counts = {"checked": 0, "in_place": 0, "duplicated": 0, "reordered": 0, "unidentified": 0}
    previous = -1
    for j in range(len(heard) // block):
        chunk = heard[j * block : (j + 1) * block]
        norm = float(np.linalg.norm(chunk))
        if norm / math.sqrt(block) < min_rms:
            previous += 1
            continue
        counts["checked"] += 1
        src = _identify(chunk, norm, src_blocks, src_norms, previous + 1, search, threshold)
        if src is None:
            counts["unidentified"] += 1
            previous += 1
            continue
        if src in seen:
            counts["duplicated"] += 1
        elif seen and src < max(seen):
            counts["reordered"] += 1
        else:
            counts["in_place"] += 1
        seen.add(src)
        previous = src
    lost = 0
    if seen:
        lost = sum(1 for k in range(min(seen), max(seen) + 1) if loud_src[k] and k not in seen)
    return ContentCheck(lag=lag, lost=lost, **counts)


def _identify(
    chunk: Pcm,
    norm: float,
    src_blocks: Pcm,
    src_norms: Pcm,
    expected: int,
    search: int,
    threshold: float,
) -> int | None:
    if 0 <= expected < len(src_blocks) and _ncc(chunk, norm, src_blocks, src_norms, expected) >= (
        threshold
    ):
        return expected
    low, high = max(0, expected - search), min(len(src_blocks), expected + search + 1)
    if low >= high:
        return None
    window = src_blocks[low:high]
    scores = (window @ chunk) / np.maximum(src_norms[low:high] * norm, 1e-9)
    best = int(np.argmax(scores))
    return low + best if scores[best] >= threshold else None


def _ncc(chunk: Pcm, norm: float, blocks: Pcm, norms: Pcm, index: int) -> float:
    return float(blocks[index] @ chunk) / max(float(norms[index]) * norm, 1e-9)


def _lag(sent: Pcm, heard: Pcm, max_lag: int) -> int:
    """The delay of ``heard`` behind ``sent`` in ``0..max_lag`` (max cross-correlation)."""
    n = min(len(heard), len(sent) + max_lag)
    size = 1 << (len(sent) + n).bit_length()
    corr = np.fft.irfft(np.fft.rfft(heard[:n], size) * np.conj(np.fft.rfft(sent, size)), size)
    return int(np.argmax(corr[: max_lag + 1]))
