"""Frame accounting: latency by position, loss, excess, pacing jitter, content identity."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.accounting import content_check, match_stream, pacing_jitter
from loadtest.audio import carrier_audio, load_fixture, to_pcm8k
from rymi_codecs import MULAW_8K, Resampler, decode, encode


def frames_at(times: list[float], samples: int) -> list[tuple[float, int]]:
    return [(t, samples) for t in times]


def test_one_to_one_stream_at_twice_the_rate_gives_each_frames_delay() -> None:
    sent = frames_at([i * 0.02 for i in range(10)], 160)  # μ-law 8 kHz frames
    delays = [0.001 * (i % 3 + 1) for i in range(10)]
    received = [(t + d, 320) for (t, _), d in zip(sent, delays, strict=True)]  # 16 kHz
    match = match_stream(sent, received, ratio=2, frame_samples=160)
    assert match.latencies_ms == pytest.approx([d * 1000 for d in delays])
    assert (match.sent_frames, match.received_frames) == (10, 10)
    assert (match.lost_frames, match.excess_frames) == (0, 0)


def test_lost_frames_are_counted_and_later_ones_matched_by_position() -> None:
    sent = frames_at([i * 0.02 for i in range(10)], 160)
    received = [(t + 0.001, 160) for t, _ in sent[:7]]  # the last three never arrive
    match = match_stream(sent, received, ratio=1, frame_samples=160)
    assert match.lost_frames == 3
    assert len(match.latencies_ms) == 7


def test_frames_in_flight_at_hang_up_are_not_lost() -> None:
    sent = frames_at([i * 0.02 for i in range(10)], 160)
    received = [(t + 0.001, 160) for t, _ in sent[:8]]
    match = match_stream(sent, received, ratio=1, frame_samples=160, count_until=0.15)
    assert match.sent_frames == 8
    assert match.lost_frames == 0


def test_a_duplicated_frame_is_excess_but_a_resampler_tail_is_not() -> None:
    sent = frames_at([i * 0.02 for i in range(5)], 160)
    received = [(t + 0.001, 320) for t, _ in sent] + [(0.2, 320)]
    assert match_stream(sent, received, ratio=2, frame_samples=160).excess_frames == 1
    tail = [(t + 0.001, 320) for t, _ in sent] + [(0.2, 27)]  # 27 samples flushed at the end
    assert match_stream(sent, tail, ratio=2, frame_samples=160).excess_frames == 0


def test_count_from_leaves_out_audio_held_while_the_agent_connected() -> None:
    sent = frames_at([i * 0.02 for i in range(6)], 160)
    received = [(0.05, 160)] * 3 + [(t + 0.001, 160) for t, _ in sent[3:]]
    match = match_stream(sent, received, ratio=1, frame_samples=160, count_from=0.05)
    assert match.latencies_ms == pytest.approx([1.0, 1.0, 1.0])
    # Each latency counted keeps its frame's send time: a report can take a window apart.
    assert match.sent_at == pytest.approx([0.06, 0.08, 0.1])


def test_bigger_receiver_messages_keep_the_send_time_of_the_frame_completing_them() -> None:
    sent = frames_at([i * 0.02 for i in range(4)], 160)
    received = [(0.03, 320), (0.07, 320)]
    match = match_stream(sent, received, ratio=1, frame_samples=160, receiver_rate=8000)
    assert match.sent_at == pytest.approx([0.02, 0.06])
    assert len(match.service_ms) == len(match.latencies_ms) == 2


def test_bigger_receiver_messages_match_the_frame_completing_them() -> None:
    sent = frames_at([i * 0.02 for i in range(4)], 160)
    received = [(0.03, 320), (0.07, 320)]  # two frames per message, same rate
    assert match_stream(sent, received, ratio=1, frame_samples=160).latencies_ms == pytest.approx(
        [10.0, 10.0]
    )


def test_match_refuses_bad_ratio() -> None:
    with pytest.raises(ValueError, match="ratio"):
        match_stream([], [], ratio=0, frame_samples=160)


def test_pacing_jitter_skips_the_lead_burst_and_measures_the_rest() -> None:
    burst = [0.0, 0.0001, 0.0002]  # the pacer's lead: three frames at once
    steady = [0.02 * k + 0.0002 for k in range(1, 6)]
    steady[2] += 0.003  # one frame 3 ms late
    jitter = pacing_jitter(burst + steady)
    assert max(jitter) == pytest.approx(3.0, abs=0.01)
    assert len(jitter) == len(burst + steady) - 1 - 2
    # A silence longer than the gap starts a new spurt (its burst is skipped again).
    assert pacing_jitter([0.0, 0.02, 0.5, 0.5, 0.5, 0.52]) == pytest.approx([0.0], abs=1e-9)


@pytest.fixture(scope="module")
def speech8k() -> bytes:
    """Four seconds of the fixture, μ-law 8 kHz (loud speech with pauses)."""
    frames = carrier_audio("twilio", load_fixture()).frames
    return b"".join(frames[:200])


def round_trip(wire: bytes) -> np.ndarray:
    """μ-law → 16 kHz → 8 kHz → μ-law, as a probe call's audio goes through the gateway."""
    up, down = Resampler(8000, 16000), Resampler(16000, 8000)
    pcm16 = up.process(decode(wire, MULAW_8K.encoding))
    back = encode(down.process(pcm16), MULAW_8K.encoding)
    return to_pcm8k(back, MULAW_8K)


def loud_blocks(wire: bytes) -> list[int]:
    pcm = to_pcm8k(wire, MULAW_8K)
    return [
        k
        for k in range(len(pcm) // 160)
        if np.sqrt(np.mean(pcm[k * 160 : (k + 1) * 160] ** 2)) > 2000
    ]


def test_content_in_place_after_codecs_and_resampling(speech8k: bytes) -> None:
    check = content_check(to_pcm8k(speech8k, MULAW_8K), round_trip(speech8k), 160)
    assert check.lag > 0  # the two resamplers' filter delay
    assert check.checked > 50
    assert check.in_place == check.checked
    assert check.duplicated == check.reordered == check.lost == check.unidentified == 0


def test_a_duplicated_block_is_found(speech8k: bytes) -> None:
    k = loud_blocks(speech8k)[20]
    frames = [speech8k[i : i + 160] for i in range(0, len(speech8k), 160)]
    heard = [*frames[: k + 1], frames[k], *frames[k + 1 :]]
    check = content_check(to_pcm8k(speech8k, MULAW_8K), to_pcm8k(b"".join(heard), MULAW_8K), 160)
    assert check.duplicated == 1
    assert check.reordered == check.lost == 0


def test_swapped_blocks_are_reordered(speech8k: bytes) -> None:
    k = loud_blocks(speech8k)[30]
    frames = [speech8k[i : i + 160] for i in range(0, len(speech8k), 160)]
    frames[k], frames[k + 1] = frames[k + 1], frames[k]
    check = content_check(to_pcm8k(speech8k, MULAW_8K), to_pcm8k(b"".join(frames), MULAW_8K), 160)
    assert check.reordered == 1
    assert check.duplicated == 0
    assert check.lost == 0  # the skipped block did arrive, late


def test_a_dropped_loud_block_is_lost(speech8k: bytes) -> None:
    k = loud_blocks(speech8k)[25]
    frames = [speech8k[i : i + 160] for i in range(0, len(speech8k), 160)]
    del frames[k]
    check = content_check(to_pcm8k(speech8k, MULAW_8K), to_pcm8k(b"".join(frames), MULAW_8K), 160)
    assert check.lost == 1
    assert check.duplicated == check.reordered == 0


def test_content_check_of_nothing() -> None:
    empty = np.zeros(0)
    assert content_check(empty, empty, 160).checked == 0


def test_service_latency_leaves_out_the_playout_queue() -> None:
    # The agent sends 6 frames at once. A pacer with a 3-frame lead sends 3 at once, then
    # one per 20 ms as the ear advances: 0.5 ms of work each, frame 4 another 2 ms late.
    sent = [(0.0, 320)] * 6
    times = [0.0005, 0.0005, 0.0005, 0.0205, 0.0425, 0.0605]
    received = [(t, 160) for t in times]
    match = match_stream(sent, received, ratio=0.5, frame_samples=320, receiver_rate=8000)
    assert match.latencies_ms == pytest.approx([t * 1000 for t in times])
    assert match.service_ms == pytest.approx([0.5, 0.5, 0.5, 0.5, 2.5, 0.5])
    # With no lead at all, the same stream was early: nothing added beyond pacing.
    no_lead = match_stream(
        sent, received, ratio=0.5, frame_samples=320, receiver_rate=8000, lead_frames=1
    )
    assert no_lead.service_ms[3:] == pytest.approx([0.0, 0.0, 0.0])
    assert match_stream(sent, received, ratio=0.5, frame_samples=320).service_ms == []
