"""The outbound playout clock: agent audio out to the carrier at exactly real time.

Agents produce speech in bursts (a TTS engine writes seconds of audio in a few hundred
milliseconds). Carriers buffer whatever they are sent and play it at 20 ms per frame, so
if we forwarded bursts as they came, seconds of audio would sit in the carrier's buffer:
a barge-in ``clear`` would then depend on the carrier's flush, and we would not know what
the caller actually heard. The :class:`Pacer` holds the audio here instead and releases
one frame per frame period, a small *lead* ahead of the caller's ear.

Theory of operation
-------------------
* Time is passed in as ``now`` (monotonic seconds, e.g. ``loop.time()``) and converted to
  integer microseconds on entry; every schedule instant is computed from integers, never
  by adding floats, so a 2-hour call (360 000 frames) ends exactly on schedule.
* A *spurt* is a stretch of continuous playout. It starts when a frame is sent while the
  carrier's buffer is empty, at anchor ``A``. The caller's ear is then at ``now - A``,
  and frame ``j`` of the spurt is due at ``A + (j + 1 - lead) * frame``: the lead's worth
  of frames go at once, then one per frame period, so never more than ``lead`` frames
  sit unheard in the carrier's buffer.
* When the queue runs dry the carrier plays out what it has and the ear stops. Audio
  that arrives later starts a new spurt at a new anchor (an *underrun*), so a gap is never
  "caught up" with a burst. A ``due()`` call so late that the carrier ran dry while audio
  waited here is a *late gap*: the same re-anchoring, counted separately.
* The gateway trusts this clock for what the caller heard. Carrier mark echoes (Twilio
  ``mark``, Plivo ``playedStream``, Vonage ``websocket:notify``; see
  ../shared/reference/carrier-protocols.md) add network and jitter-buffer delay, and
  differ after a clear (Twilio echoes pending marks, Plivo drops them), so
  :meth:`Pacer.reconcile_carrier_mark` reports the drift for measurement and never
  moves the clock.

Overflow policy (outbound)
--------------------------
The queue is bounded (``max_queue_frames``, default 10 s). The edge is expected to apply
back-pressure long before that: stop reading the agent's socket while
:attr:`Pacer.queued_ms` is above its high-water mark, so TCP slows the agent. If the queue
is full anyway (an agent ignoring flow control), the *oldest* queued frame is dropped and
counted: what the agent sent last is its current state, and keeping the oldest would let
the caller fall ever further behind real time, the same rule as the inbound direction
(reliability.md §5.4). A clear drops everything queued in one step.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from gateway.errors import ConfigError

__all__ = ["ClearResult", "MarkDrift", "MarkPlayed", "Pacer", "PacerStats"]

_US_PER_S = 1_000_000
_RECENT_MARKS = 64  # marks remembered for carrier-echo reconciliation


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """A mark the caller's ear reached (or, in :attr:`ClearResult.cleared_marks`, never will)."""

    name: str
    """The name the agent gave the mark."""
    heard_ms: int
    """Milliseconds of audio the caller heard between the previous mark (or clear, or the
    start of the call) and this one. For a cleared mark: what was heard of that stretch
    before the clear (0 for every cleared mark after the first)."""
    position_ms: int
    """Milliseconds of agent audio the caller had heard in the whole call at this mark."""


@dataclass(frozen=True, slots=True)
class ClearResult:
    """What a clear (barge-in) discarded and what the caller had heard by then."""

    dropped_frames: int
    """Queued frames discarded here; they were never sent."""
    flushed_ms: int
    """Audio already sent but not yet heard, which the carrier's clear discards."""
    heard_ms: int
    """Milliseconds of agent audio the caller heard in the whole call, up to the clear."""
    heard_since_mark_ms: int
    """Of which since the last mark played (or the previous clear)."""
    played_marks: tuple[MarkPlayed, ...]
    """Marks reached before the clear that :meth:`Pacer.marks_played` had not returned yet."""
    cleared_marks: tuple[MarkPlayed, ...]
    """Marks the caller will never reach, in stream order."""


@dataclass(frozen=True, slots=True)
class MarkDrift:
    """How a carrier's mark echo compares with our playout clock."""

    name: str
    """The mark."""
    drift_ms: float | None
    """Carrier echo time minus our clock's play time (positive: the carrier is later, as
    network and jitter buffer delay make it); None for a mark that was cleared."""


@dataclass(slots=True)
class PacerStats:
    """Counters for metrics and the call record (monotonic over the pacer's life)."""

    frames_enqueued: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0
    """Oldest frames dropped because the queue was full."""
    frames_cleared: int = 0
    """Queued frames discarded by clears."""
    clears: int = 0
    underruns: int = 0
    """Playout ran dry and later resumed (includes pauses between utterances: the pacer
    cannot tell a pause from a starved stream)."""
    late_gaps: int = 0
    """Playout ran dry while audio waited here, because ``due()`` was called too late."""
    late_frames: int = 0
    """Frames sent more than the late threshold after their due time."""
    max_lateness_ms: float = 0.0
    marks_played: int = 0
    marks_cleared: int = 0
    max_mark_drift_ms: float = 0.0
    """Largest absolute carrier-echo drift seen (see :meth:`Pacer.reconcile_carrier_mark`)."""


@dataclass(slots=True)
class _Mark:
    name: str
    at_us: int
    """When the ear passes the mark (our clock)."""
    position_us: int
    """Total heard-audio position of the mark."""


class Pacer:
    """Releases exact frames at real time, a few frames ahead of the caller's ear.

    Args:
        frame_ms: duration of one frame, in milliseconds.
        lead_frames: frames kept in the carrier's buffer ahead of the ear (3 = 60 ms).
        max_queue_frames: most frames held here; see the overflow policy above.
        late_after_ms: a frame sent more than this after its due time counts as late.
        frame_bytes: when given, every frame must be exactly this long.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        frame_ms: int = 20,
        lead_frames: int = 3,
        max_queue_frames: int = 500,
        *,
        late_after_ms: float = 10.0,
        frame_bytes: int | None = None,
    ) -> None:
        _check_config(frame_ms, lead_frames, max_queue_frames, late_after_ms, frame_bytes)
        self._frame_us = frame_ms * 1000
        self._lead = lead_frames
        self._max_queue = max_queue_frames
        self._late_us = round(late_after_ms * 1000)
        self._frame_bytes = frame_bytes
        self._stats = PacerStats()
        self._queue: deque[bytes] = deque()
        self._seq_in = 0  # sequence number the next enqueued frame gets
        self._anchor_us: int | None = None  # None: the ear is idle (no spurt)
        self._spurt_sent = 0
        self._heard_base_us = 0  # heard-audio position at the start of this spurt
        self._pending_since_us = 0  # when audio arrived for an idle ear
        self._resumed_from_gap = False
        self._segment_start_us = 0  # heard position of the last mark or clear
        self._unsent_marks: deque[tuple[int, str]] = deque()  # (sequence position, name)
        self._sent_marks: deque[_Mark] = deque()  # audio before them sent, ear not there yet
        self._announce: list[str] = []
        self._recent: OrderedDict[str, int | None] = OrderedDict()
        self.released_due: float | None = None
        """When the first frame of the last non-empty :meth:`due` was due (monotonic s):
        what :meth:`next_deadline` said just before it. The meter's lateness."""

    # -- inputs --------------------------------------------------------------------------

    def enqueue(self, frame: bytes, now: float) -> None:
        """Queue one frame of agent audio (already in the carrier's format).

        Raises:
            ValueError: the frame is empty or not ``frame_bytes`` long (a bug upstream).
        """
        if not frame or (self._frame_bytes is not None and len(frame) != self._frame_bytes):
            raise ValueError(f"frame: expected {self._frame_bytes or 'a non-empty'} bytes")
        now_us = round(now * _US_PER_S)  # (_to_us inline: the per-frame path)
        if not self._queue:
            self._close_if_drained(now_us)
            if self._anchor_us is None:
                self._pending_since_us = now_us
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self._stats.frames_dropped += 1
            self._resolve_marks(now_us)
        self._queue.append(frame)
        self._seq_in += 1
        self._stats.frames_enqueued += 1

    def mark(self, name: str, now: float) -> None:
        """Place a mark after the last queued frame.

        The mark is *sent* when every frame before it has been sent (see
        :meth:`sent_marks`) and *played* when the caller's ear passes it (see
        :meth:`marks_played`).
        """
        self._close_if_drained(_to_us(now))
        self._unsent_marks.append((self._seq_in, name))
        self._resolve_marks(_to_us(now))

    def clear(self, now: float) -> ClearResult:
        """Barge-in: drop everything queued and settle what the caller heard.

        The edge sends the carrier's clear (Twilio ``clear``, Plivo ``clearAudio``, Vonage
        ``{"action": "clear"}``) at the same moment, flushing what was sent but unheard.
        """
        now_us = _to_us(now)
        played = tuple(self.marks_played(now))
        heard_us = self._heard_us(now_us)
        flushed_us = 0
        if self._anchor_us is not None:
            flushed_us = self._heard_base_us + self._spurt_sent * self._frame_us - heard_us
        dropped = len(self._queue)
        self._queue.clear()
        self._stats.frames_cleared += dropped
        self._stats.clears += 1
        cleared = self._clear_marks(heard_us)
        since_mark_us = heard_us - self._segment_start_us
        self._segment_start_us = heard_us
        self._anchor_us, self._spurt_sent, self._heard_base_us = None, 0, heard_us
        self._resumed_from_gap = False
        return ClearResult(
            dropped_frames=dropped,
            flushed_ms=_to_ms(flushed_us),
            heard_ms=_to_ms(heard_us),
            heard_since_mark_ms=_to_ms(since_mark_us),
            played_marks=played,
            cleared_marks=cleared,
        )

    # -- outputs -------------------------------------------------------------------------

    def due(self, now: float) -> list[bytes]:
        """The frames to send to the carrier now, in order (possibly none).

        When it returns frames, :attr:`released_due` is when the first of them was due.
        """
        now_us = round(now * _US_PER_S)  # (_to_us inline: the per-frame path)
        queue = self._queue
        if not queue:
            self._close_if_drained(now_us)
            return []
        head_us = self._next_deadline_us()  # before anything moves: the lateness reference
        anchor_us = self._anchor_us
        if anchor_us is not None and now_us > anchor_us + self._spurt_sent * self._frame_us:
            self._note_lateness(now_us)
            self._stats.late_gaps += 1
            self._close_spurt(self._end_us())
        if self._anchor_us is None:
            self._start_spurt(now_us)
        # The per-frame loop of the paced writer: _due_us and _note_lateness inlined.
        anchor_us, frame_us, sent = self._anchor_us, self._frame_us, self._spurt_sent
        assert anchor_us is not None
        due_us = anchor_us + (sent + 1 - self._lead) * frame_us
        frames: list[bytes] = []
        while queue and due_us <= now_us:
            late_us = now_us - max(anchor_us, due_us)
            if late_us > self._late_us:
                self._stats.late_frames += 1
                self._stats.max_lateness_ms = max(self._stats.max_lateness_ms, late_us / 1000)
            frames.append(queue.popleft())
            sent += 1
            due_us += frame_us
        self._spurt_sent = sent
        self._stats.frames_sent += len(frames)
        if frames and head_us is not None:
            self.released_due = head_us / _US_PER_S
        if self._unsent_marks:
            self._resolve_marks(now_us)
        return frames

    def next_deadline(self) -> float | None:
        """When :meth:`due` or :meth:`marks_played` next has something (monotonic s).

        May be in the past (call them at once); None when nothing is pending.
        """
        deadline_us = self._next_deadline_us()
        return None if deadline_us is None else deadline_us / _US_PER_S

    def is_due(self, now: float) -> bool:
        """Whether :meth:`next_deadline` has come at ``now``.

        Compared in the pacer's integer microseconds: a float comparison with
        :meth:`next_deadline` can miss by the rounding of ``now`` to whole microseconds.
        """
        deadline_us = self._next_deadline_us()
        return deadline_us is not None and deadline_us <= _to_us(now)

    def _next_deadline_us(self) -> int | None:
        deadline_us: int | None = None
        if self._queue:
            anchor_us = self._anchor_us
            if anchor_us is None:
                deadline_us = self._pending_since_us
            else:
                deadline_us = anchor_us + (self._spurt_sent + 1 - self._lead) * self._frame_us
        if self._sent_marks:
            mark_us = self._sent_marks[0].at_us
            if deadline_us is None or mark_us < deadline_us:
                deadline_us = mark_us
        return deadline_us

    @property
    def marks_pending(self) -> bool:
        """Whether any mark is waiting to be sent, announced or played.

        False lets the paced writer skip :meth:`sent_marks` and :meth:`marks_played`.
        """
        return bool(self._unsent_marks or self._sent_marks or self._announce)

    def sent_marks(self) -> list[str]:
        """Marks whose preceding audio has all been sent since the last call.

        The edge forwards each to the carrier (Twilio ``mark``, Plivo ``checkpoint``,
        Vonage ``notify``) right after the frames from :meth:`due`, so the carrier's
        echo can confirm our clock.
        """
        names, self._announce = self._announce, []
        return names

    def marks_played(self, now: float) -> list[MarkPlayed]:
        """Marks the caller's ear has passed by ``now``, each returned once, in order."""
        now_us = _to_us(now)
        played: list[MarkPlayed] = []
        while self._sent_marks and self._sent_marks[0].at_us <= now_us:
            mark = self._sent_marks.popleft()
            played.append(self._settle(mark.name, mark.position_us, mark.at_us))
            self._segment_start_us = mark.position_us
        self._stats.marks_played += len(played)
        return played

    def reconcile_carrier_mark(self, name: str, now: float) -> MarkDrift | None:
        """Compare the carrier's echo of mark ``name``, received at ``now``, with our clock.

        Returns:
            The drift, or None when the mark is not one the pacer has sent.
        """
        if name in self._recent:
            at_us = self._recent[name]
        else:
            at_us = next((m.at_us for m in self._sent_marks if m.name == name), None)
            if at_us is None:
                return None
        if at_us is None:
            return MarkDrift(name, None)
        drift_ms = (_to_us(now) - at_us) / 1000
        self._stats.max_mark_drift_ms = max(self._stats.max_mark_drift_ms, abs(drift_ms))
        return MarkDrift(name, drift_ms)

    # -- state ---------------------------------------------------------------------------

    @property
    def stats(self) -> PacerStats:
        """A snapshot of the counters."""
        return replace(self._stats)

    @property
    def queued_frames(self) -> int:
        """Frames waiting here (not yet sent)."""
        return len(self._queue)

    @property
    def queued_ms(self) -> int:
        """Milliseconds of audio waiting here; the edge's back-pressure signal."""
        return len(self._queue) * self._frame_us // 1000

    def heard_ms(self, now: float) -> int:
        """Milliseconds of agent audio the caller has heard so far in the call."""
        return _to_ms(self._heard_us(_to_us(now)))

    def ahead_ms(self, now: float) -> int:
        """Milliseconds sent to the carrier but not yet heard (at most the lead)."""
        now_us = _to_us(now)
        if self._anchor_us is None:
            return 0
        return _to_ms(
            self._heard_base_us + self._spurt_sent * self._frame_us - self._heard_us(now_us)
        )

    # -- internals -----------------------------------------------------------------------

    def _due_us(self, j: int) -> int:
        assert self._anchor_us is not None
        return self._anchor_us + (j + 1 - self._lead) * self._frame_us

    def _end_us(self) -> int:
        """When the ear reaches the end of what this spurt has sent."""
        assert self._anchor_us is not None
        return self._anchor_us + self._spurt_sent * self._frame_us

    def _heard_us(self, now_us: int) -> int:
        if self._anchor_us is None:
            return self._heard_base_us
        played = min(max(now_us - self._anchor_us, 0), self._spurt_sent * self._frame_us)
        return self._heard_base_us + played

    def _start_spurt(self, now_us: int) -> None:
        if self._resumed_from_gap:
            self._stats.underruns += 1
            self._resumed_from_gap = False
        self._anchor_us, self._spurt_sent = now_us, 0

    def _close_spurt(self, at_us: int) -> None:
        self._heard_base_us = self._heard_us(at_us)
        self._anchor_us, self._spurt_sent = None, 0

    def _close_if_drained(self, now_us: int) -> None:
        """End the spurt if the ear has played everything sent (queue empty)."""
        if self._anchor_us is not None and not self._queue and now_us > self._end_us():
            self._close_spurt(self._end_us())
            self._resumed_from_gap = True

    def _note_lateness(self, now_us: int) -> None:
        """Count the next frame as late if ``now`` is well past its due time."""
        assert self._anchor_us is not None
        late_us = now_us - max(self._anchor_us, self._due_us(self._spurt_sent))
        if late_us > self._late_us:
            self._stats.late_frames += 1
            self._stats.max_lateness_ms = max(self._stats.max_lateness_ms, late_us / 1000)

    def _resolve_marks(self, now_us: int) -> None:
        """Move marks whose preceding frames have all left the queue to ``_sent_marks``."""
        head_seq = self._seq_in - len(self._queue)
        while self._unsent_marks and self._unsent_marks[0][0] <= head_seq:
            _, name = self._unsent_marks.popleft()
            if self._anchor_us is None:
                at_us, position_us = now_us, self._heard_base_us
            else:
                at_us = self._end_us()
                position_us = self._heard_base_us + self._spurt_sent * self._frame_us
            self._sent_marks.append(_Mark(name, at_us, position_us))
            self._announce.append(name)

    def _clear_marks(self, heard_us: int) -> tuple[MarkPlayed, ...]:
        names = [m.name for m in self._sent_marks] + [name for _, name in self._unsent_marks]
        self._sent_marks.clear()
        self._unsent_marks.clear()
        cleared = []
        for i, name in enumerate(names):
            heard = heard_us - self._segment_start_us if i == 0 else 0
            cleared.append(MarkPlayed(name, _to_ms(heard), _to_ms(heard_us)))
            self._remember(name, None)
        self._stats.marks_cleared += len(cleared)
        return tuple(cleared)

    def _settle(self, name: str, position_us: int, at_us: int) -> MarkPlayed:
        self._remember(name, at_us)
        return MarkPlayed(name, _to_ms(position_us - self._segment_start_us), _to_ms(position_us))

    def _remember(self, name: str, at_us: int | None) -> None:
        self._recent[name] = at_us
        self._recent.move_to_end(name)
        if len(self._recent) > _RECENT_MARKS:
            self._recent.popitem(last=False)


def _to_us(seconds: float) -> int:
    return round(seconds * _US_PER_S)


def _to_ms(us: int) -> int:
    return us // 1000


def _check_config(
    frame_ms: int, lead: int, max_queue: int, late_after_ms: float, frame_bytes: int | None
) -> None:
    if not 1 <= frame_ms <= 100:
        raise ConfigError("pacer frame_ms", f"expected 1-100 ms, got {frame_ms}")
    if not 1 <= lead <= 50:
        raise ConfigError("pacer lead_frames", f"expected 1-50 frames, got {lead}")
    if not lead <= max_queue <= 360_000:
        raise ConfigError("pacer max_queue_frames", f"expected {lead}-360000, got {max_queue}")
    if not 0 <= late_after_ms <= 1000:
        raise ConfigError("pacer late_after_ms", f"expected 0-1000 ms, got {late_after_ms}")
    if frame_bytes is not None and frame_bytes < 1:
        raise ConfigError("pacer frame_bytes", f"expected >= 1, got {frame_bytes}")
