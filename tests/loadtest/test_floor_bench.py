"""``python -m loadtest.floor_bench``: the C and uvloop relays move every byte, and the
figures are computed from what the peers sent and got back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtest import floor_bench
from loadtest.floor_bench import FloorError, FloorResult

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None, reason="no C compiler: sudo apt-get install gcc"
)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return floor_bench.build(tmp_path_factory.mktemp("floor"))


@pytest.mark.parametrize("relay", floor_bench.RELAYS)
def test_every_message_sent_in_the_window_comes_back_through_the_relay(
    relay: str, binary: Path, tmp_path: Path
) -> None:
    result = floor_bench.measure(
        relay, 4, binary=binary, workdir=tmp_path, seconds=1.0, warmup_s=0.3
    )
    # 4 calls, a message each way every 20 ms for 1 s: 400 messages (a tick either side
    # of the window, as its edges fall between sends).
    assert 392 <= result.sent <= 408
    assert result.received == result.sent
    assert result.lost == 0
    assert result.failed_sends == 0
    latency = result.latency_us
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"]
    assert latency["p999"] < 200_000  # the histogram's overflow bucket is not reached
    assert result.seconds > 0.5
    assert result.relay_cpu_s >= 0


def test_a_level_run_again_in_the_same_folder_reports_its_own_run(
    binary: Path, tmp_path: Path
) -> None:
    first = floor_bench.measure("c", 2, binary=binary, workdir=tmp_path, seconds=0.4)
    again = floor_bench.measure("c", 2, binary=binary, workdir=tmp_path, seconds=1.2)
    # 2 calls: 200 messages a second, so about 80 and 240 (a tick either side).
    assert 70 <= first.sent <= 90
    assert 230 <= again.sent <= 250
    assert again.received == again.sent


def test_a_message_size_out_of_range_is_refused_by_the_peer(binary: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(binary), "peer", "1", "1", "4", "648", "0.1", "0.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "message sizes must be 8-65536 bytes" in done.stderr


def test_derived_figures_follow_from_the_counts() -> None:
    result = FloorResult(
        relay="c",
        calls=100,
        seconds=10.0,
        relay_cpu_s=2.0,
        sent=100_000,
        received=99_990,
        failed_sends=0,
        latency_us={"p50": 1, "p90": 2, "p99": 3, "p999": 4},
    )
    assert result.cpu_percent == pytest.approx(20.0)
    assert result.cpu_percent_per_call == pytest.approx(0.2)
    # 100 calls x 100 messages a second x 10 s = 100 000 messages in 2 s of CPU: 20 µs each.
    assert result.us_per_message == pytest.approx(20.0)
    assert result.lost == 10
    assert json.loads(json.dumps(result.as_dict()))["us_per_message"] == 20.0


def test_an_unknown_relay_is_named_in_the_error(binary: Path, tmp_path: Path) -> None:
    with pytest.raises(FloorError, match="unknown relay 'rust': one of c, uvloop"):
        floor_bench.measure("rust", 1, binary=binary, workdir=tmp_path, seconds=0.1)


def test_a_missing_compiler_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CC", "no-such-cc-anywhere")
    with pytest.raises(FloorError, match=r"no C compiler .*apt-get install gcc"):
        floor_bench.build(tmp_path)


def test_the_command_prints_a_row_per_run_and_writes_them_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "floor.json"
    argv = ["--calls", "2", "--relays", "c,uvloop", "--seconds", "0.5", "--warmup", "0.2"]
    argv += ["--carrier-bytes", "644", "--relay-cpus", "", "--peer-cpus", "", "--json", str(out)]
    assert floor_bench.main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0:2] for row in rows[1:]] == [["| c", "2"], ["| uvloop", "2"]]
    results = json.loads(out.read_text())
    assert [(r["relay"], r["calls"], r["lost"]) for r in results] == [("c", 2, 0), ("uvloop", 2, 0)]
    assert all(r["sent"] > 0 and r["received"] == r["sent"] for r in results)
