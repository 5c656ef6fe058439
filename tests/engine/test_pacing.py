"""The outbound playout clock, driven by a fake clock (plain float seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.pacing import MarkDrift, MarkPlayed, Pacer

T0 = 12_345.678  # an arbitrary monotonic start, not a round number


def frame(n: int) -> bytes:
    """Frame ``n``: 160 bytes (20 ms of μ-law) that say which frame they are."""
    return n.to_bytes(4, "big") * 40


def ident(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


def fill(pacer: Pacer, first: int, count: int, now: float) -> None:
    for n in range(first, first + count):
        pacer.enqueue(frame(n), now)


def run_until(
    pacer: Pacer, end: float, start: float = 0.0, marks: list[MarkPlayed] | None = None
) -> list[tuple[float, int]]:
    """Call due() at every deadline from ``start`` up to ``end``; return (time, frame id).

    Marks are collected into ``marks`` when it is given, else left for the test to read.
    """
    sent: list[tuple[float, int]] = []
    now = start
    deadline = pacer.next_deadline()
    while deadline is not None and deadline <= end:
        now = max(now, deadline)
        out = pacer.due(now)
        sent.extend((now, ident(f)) for f in out)
        if marks is not None:
            marks += pacer.marks_played(now)
        elif not out:
            break  # only marks are due, and the test reads them itself
        deadline = pacer.next_deadline()
    return sent


class TestSchedule:
    def test_is_due_compares_in_whole_microseconds_not_floats(self) -> None:
        pacer = Pacer(lead_frames=3, max_queue_frames=500)
        assert not pacer.is_due(T0)  # nothing queued
        now = 1.0000006  # rounds up to 1 000 001 µs on entry
        fill(pacer, 0, 1, now)
        deadline = pacer.next_deadline()
        assert deadline is not None
        assert deadline > now  # the float comparison would say "not yet"
        assert pacer.is_due(now)  # and due() at this instant does release it
        assert len(pacer.due(now)) == 1
        assert not pacer.is_due(now)

    def test_two_hour_call_has_zero_drift(self) -> None:
        frames_total = 360_000  # 2 h of 20 ms frames
        pacer = Pacer(lead_frames=3, max_queue_frames=500)
        sent_at: list[float] = []
        fill(pacer, 0, 100, T0)
        enqueued = 100
        deadline = pacer.next_deadline()
        while deadline is not None:
            # Agent audio keeps arriving in 2 s bursts whenever 1 s is left.
            if pacer.queued_frames < 50 and enqueued < frames_total:
                count = min(100, frames_total - enqueued)
                fill(pacer, enqueued, count, deadline)
                enqueued += count
            out = pacer.due(deadline)
            sent_at.extend([deadline] * len(out))
            deadline = pacer.next_deadline()
        t0_us = round(T0 * 1e6)
        n = np.arange(frames_total, dtype=np.int64)
        expected_us = t0_us + np.maximum(n + 1 - 3, 0) * 20_000  # the integer schedule
        # Bit-exact: every deadline is computed from integers, never accumulated.
        assert np.array_equal(np.asarray(sent_at), expected_us / 1e6)
        stats = pacer.stats
        assert (stats.frames_sent, stats.underruns, stats.late_frames) == (frames_total, 0, 0)
        assert pacer.heard_ms(T0 + 7200.0) == 7_200_000
        assert pacer.heard_ms(T0 + 7199.99) == 7_199_990

    def test_burst_is_spread_out(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 50, T0)
        assert pacer.next_deadline() == T0
        sent = run_until(pacer, T0 + 10)
        assert [n for _, n in sent] == list(range(50))
        for t, n in sent:
            assert round(t * 1e6) == round(T0 * 1e6) + max(0, n - 2) * 20_000
        assert pacer.next_deadline() is None

    def test_never_more_than_the_lead_ahead(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 50, T0)
        assert len(pacer.due(T0)) == 3
        assert pacer.ahead_ms(T0) == 60
        assert pacer.due(T0 + 0.019) == []
        assert len(pacer.due(T0 + 0.02)) == 1
        assert pacer.ahead_ms(T0 + 0.02) == 60
        assert pacer.ahead_ms(T0 + 0.039) == 41

    def test_exact_frame_size_is_enforced(self) -> None:
        pacer = Pacer(frame_bytes=160)
        pacer.enqueue(frame(1), T0)
        with pytest.raises(ValueError, match="160"):
            pacer.enqueue(b"\x00" * 159, T0)
        with pytest.raises(ValueError, match="non-empty"):
            Pacer().enqueue(b"", T0)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"frame_ms": 0},
            {"lead_frames": 0},
            {"lead_frames": 51},
            {"lead_frames": 5, "max_queue_frames": 4},
            {"late_after_ms": -1},
            {"frame_bytes": 0},
        ],
    )
    def test_bad_configuration(self, kwargs: dict[str, int]) -> None:
        with pytest.raises(ConfigError):
            Pacer(**kwargs)


class TestGapsAndLateness:
    def test_underrun_reanchors_instead_of_bursting(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 5, T0)
        run_until(pacer, T0 + 1)  # the ear reaches the end at T0 + 0.1
        assert pacer.heard_ms(T0 + 0.5) == 100
        fill(pacer, 5, 10, T0 + 1.0)
        assert len(pacer.due(T0 + 1.0)) == 3  # the lead only, not 0.9 s of catch-up
        assert pacer.heard_ms(T0 + 1.05) == 150
        sent = run_until(pacer, T0 + 2)
        assert round(sent[-1][0] * 1e6) == round((T0 + 1.0) * 1e6) + 7 * 20_000
        assert pacer.heard_ms(T0 + 2) == 300
        assert pacer.stats.underruns == 1
        assert pacer.stats.late_gaps == 0

    def test_audio_arriving_before_the_ear_runs_out_continues_the_schedule(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 5, T0)
        run_until(pacer, T0 + 0.09)
        fill(pacer, 5, 5, T0 + 0.095)
        sent = run_until(pacer, T0 + 1, start=T0 + 0.095)
        assert [round((t - T0) * 1000) for t, _ in sent] == [95, 95, 100, 120, 140]
        assert pacer.heard_ms(T0 + 1) == 200
        assert pacer.stats.underruns == 0

    def test_slightly_late_call_sends_only_up_to_the_lead(self) -> None:
        pacer = Pacer(lead_frames=3, late_after_ms=10)
        fill(pacer, 0, 50, T0)
        pacer.due(T0)
        out = pacer.due(T0 + 0.050)  # 30 ms late; the carrier still holds 10 ms
        assert [ident(f) for f in out] == [3, 4]
        assert pacer.ahead_ms(T0 + 0.050) == 50
        stats = pacer.stats
        assert (stats.late_frames, stats.late_gaps) == (1, 0)
        assert stats.max_lateness_ms == pytest.approx(30.0)

    def test_very_late_call_is_a_gap_not_a_burst(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 50, T0)
        pacer.due(T0)
        out = pacer.due(T0 + 0.5)  # the carrier ran dry at T0 + 0.06
        assert [ident(f) for f in out] == [3, 4, 5]
        assert pacer.heard_ms(T0 + 0.5) == 60
        assert pacer.heard_ms(T0 + 0.51) == 70
        stats = pacer.stats
        assert (stats.late_gaps, stats.underruns, stats.late_frames) == (1, 0, 1)
        assert stats.max_lateness_ms == pytest.approx(480.0)

    def test_overflow_drops_the_oldest_queued_frame(self) -> None:
        pacer = Pacer(lead_frames=1, max_queue_frames=5)
        fill(pacer, 0, 8, T0)
        assert pacer.queued_frames == 5
        assert pacer.queued_ms == 100
        assert [n for _, n in run_until(pacer, T0 + 1)] == [3, 4, 5, 6, 7]
        stats = pacer.stats
        assert (stats.frames_enqueued, stats.frames_dropped, stats.frames_sent) == (8, 3, 5)


class TestClear:
    def test_clear_drops_queue_and_reports_what_was_heard(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 50, T0)
        run_until(pacer, T0 + 0.5)  # frames 0..27 sent (27 was due at +0.5)
        result = pacer.clear(T0 + 0.5137)
        assert result.dropped_frames == 22
        assert result.heard_ms == 513
        assert result.flushed_ms == 46  # 560 ms sent, 513.7 ms heard
        assert result.heard_since_mark_ms == 513
        assert pacer.due(T0 + 0.52) == []
        assert pacer.next_deadline() is None
        assert pacer.heard_ms(T0 + 5) == 513
        stats = pacer.stats
        assert (stats.frames_cleared, stats.clears, stats.frames_sent) == (22, 1, 28)

    def test_audio_after_clear_starts_a_new_spurt(self) -> None:
        pacer = Pacer(lead_frames=2)
        fill(pacer, 0, 10, T0)
        run_until(pacer, T0 + 0.1)
        pacer.clear(T0 + 0.1)
        fill(pacer, 100, 3, T0 + 0.1)
        assert [ident(f) for f in pacer.due(T0 + 0.1)] == [100, 101]
        assert pacer.heard_ms(T0 + 0.13) == 130
        assert pacer.stats.underruns == 0

    def test_clear_when_idle(self) -> None:
        result = Pacer().clear(T0)
        assert (result.dropped_frames, result.flushed_ms, result.heard_ms) == (0, 0, 0)
        assert result.cleared_marks == ()


class TestMarks:
    def test_marks_fire_when_the_ear_passes_them(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 10, T0)
        pacer.mark("a", T0)
        fill(pacer, 10, 5, T0)
        pacer.mark("b", T0)
        run_until(pacer, T0 + 0.14)
        assert pacer.sent_marks() == ["a"]  # frame 9 went at +0.14
        assert pacer.sent_marks() == []
        assert pacer.marks_played(T0 + 0.199999) == []
        assert pacer.next_deadline() == pytest.approx(T0 + 0.16)
        run_until(pacer, T0 + 0.19)
        assert pacer.marks_played(T0 + 0.2) == [MarkPlayed("a", 200, 200)]
        played = []
        deadline = pacer.next_deadline()
        while deadline is not None:
            pacer.due(deadline)
            played += pacer.marks_played(deadline)
            deadline = pacer.next_deadline()
        assert played == [MarkPlayed("b", 100, 300)]
        assert pacer.stats.marks_played == 2

    def test_mark_on_idle_stream_plays_at_once(self) -> None:
        pacer = Pacer()
        pacer.mark("start", T0)
        assert pacer.sent_marks() == ["start"]
        assert pacer.next_deadline() == T0
        assert pacer.marks_played(T0) == [MarkPlayed("start", 0, 0)]

    def test_mark_after_sent_audio_plays_at_its_end(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 3, T0)
        pacer.due(T0)
        pacer.mark("end", T0 + 0.01)
        assert pacer.marks_played(T0 + 0.059) == []
        assert pacer.marks_played(T0 + 0.06) == [MarkPlayed("end", 60, 60)]

    def test_clear_settles_played_and_cleared_marks(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 10, T0)
        pacer.mark("a", T0)
        fill(pacer, 10, 10, T0)
        pacer.mark("b", T0)
        fill(pacer, 20, 10, T0)
        pacer.mark("c", T0)
        run_until(pacer, T0 + 0.25)
        result = pacer.clear(T0 + 0.25)
        assert result.played_marks == (MarkPlayed("a", 200, 200),)
        assert result.cleared_marks == (MarkPlayed("b", 50, 250), MarkPlayed("c", 0, 250))
        assert result.heard_since_mark_ms == 50
        assert result.heard_ms == 250
        fill(pacer, 30, 5, T0 + 1)
        pacer.mark("d", T0 + 1)
        run_until(pacer, T0 + 2)
        assert pacer.marks_played(T0 + 2) == [MarkPlayed("d", 100, 350)]
        assert (pacer.stats.marks_played, pacer.stats.marks_cleared) == (2, 2)

    def test_marks_behind_dropped_frames_still_resolve(self) -> None:
        pacer = Pacer(lead_frames=1, max_queue_frames=2)
        fill(pacer, 0, 1, T0)
        pacer.mark("a", T0)
        fill(pacer, 1, 2, T0)  # frame 0 dropped: "a" now has no audio before it
        assert pacer.sent_marks() == ["a"]
        assert pacer.marks_played(T0) == [MarkPlayed("a", 0, 0)]

    def test_reconcile_carrier_echo(self) -> None:
        pacer = Pacer(lead_frames=3)
        fill(pacer, 0, 10, T0)
        pacer.mark("a", T0)
        fill(pacer, 10, 10, T0)
        pacer.mark("b", T0)
        played: list[MarkPlayed] = []
        run_until(pacer, T0 + 0.34, marks=played)
        assert played == [MarkPlayed("a", 200, 200)]
        early = pacer.reconcile_carrier_mark("b", T0 + 0.39)  # our clock says +0.4
        assert early is not None
        assert early.drift_ms == pytest.approx(-10.0)
        late = pacer.reconcile_carrier_mark("a", T0 + 0.283)
        assert late is not None
        assert late.drift_ms == pytest.approx(83.0)
        assert pacer.reconcile_carrier_mark("nope", T0 + 0.3) is None
        pacer.clear(T0 + 0.35)
        assert pacer.reconcile_carrier_mark("b", T0 + 0.36) == MarkDrift("b", None)
        assert pacer.stats.max_mark_drift_ms == pytest.approx(83.0)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["enqueue", "due", "deadline", "clear", "mark", "played"]),
        st.integers(min_value=1, max_value=40),
        st.floats(min_value=0, max_value=0.25, allow_nan=False),
    ),
    max_size=60,
)


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(OPS, st.integers(min_value=1, max_value=5), st.integers(min_value=5, max_value=40))
    def test_conservation_order_and_lead(
        self, ops: list[tuple[str, int, float]], lead: int, max_queue: int
    ) -> None:
        pacer = Pacer(lead_frames=lead, max_queue_frames=max(max_queue, lead))
        now, next_id, marks_placed, heard = T0, 0, 0, 0
        sent: list[int] = []
        marks_done = 0
        for op, n, dt in ops:
            now += dt
            if op == "enqueue":
                fill(pacer, next_id, n, now)
                next_id += n
            elif op == "due":
                sent += [ident(f) for f in pacer.due(now)]
            elif op == "deadline":
                deadline = pacer.next_deadline()
                if deadline is not None:
                    now = max(now, deadline)
                    sent += [ident(f) for f in pacer.due(now)]
            elif op == "clear":
                result = pacer.clear(now)
                marks_done += len(result.played_marks) + len(result.cleared_marks)
                assert result.heard_ms == pacer.heard_ms(now)
                assert all(m.position_ms <= result.heard_ms for m in result.played_marks)
            elif op == "mark":
                pacer.mark(f"m{marks_placed}", now)
                marks_placed += 1
            else:
                played = pacer.marks_played(now)
                marks_done += len(played)
                assert all(0 <= m.heard_ms <= m.position_ms <= pacer.heard_ms(now) for m in played)
            stats = pacer.stats
            assert stats.frames_enqueued == next_id
            assert stats.frames_sent == len(sent)
            assert (
                stats.frames_sent
                + pacer.queued_frames
                + stats.frames_dropped
                + stats.frames_cleared
            ) == stats.frames_enqueued
            assert 0 <= pacer.ahead_ms(now) <= lead * 20
            assert pacer.heard_ms(now) >= heard
            heard = pacer.heard_ms(now)
            assert marks_done <= marks_placed
        assert sent == sorted(set(sent))  # in order, never twice
        assert heard <= len(sent) * 20
