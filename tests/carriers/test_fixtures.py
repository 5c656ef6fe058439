"""Golden wire fixtures (tests/fixtures/<carrier>/*.json), valid and invalid sequences.

Each file lists messages (``text``, ``binary_hex`` or ``close``), the event types they
must yield, and for invalid sequences the index of the message that must fail and the
close code it must carry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.carriers import Event, get
from gateway.errors import CarrierProtocolError

FIXTURES = Path(__file__).parent.parent / "fixtures"
FILES = sorted(
    path
    for carrier in ("twilio", "plivo", "vonage")
    for path in (FIXTURES / carrier).glob("*.json")
)


def run(carrier: str, messages: list[dict[str, Any]], upto: int) -> list[Event]:
    stream = get(carrier).open_stream()
    events: list[Event] = []
    for message in messages[:upto]:
        if "close" in message:
            events += stream.connection_closed()
        elif "binary_hex" in message:
            events += stream.receive(bytes.fromhex(message["binary_hex"]))
        else:
            events += stream.receive(message["text"])
    return events


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path) -> None:
    spec = json.loads(path.read_text(encoding="utf-8"))
    carrier = path.parent.name
    messages = spec["messages"]
    error = spec["error"]
    assert path.stem.startswith("invalid") == (error is not None)
    upto = error["at"] if error else len(messages)
    events = run(carrier, messages, upto)
    assert [type(e).__name__ for e in events] == spec["events"]
    if error:
        with pytest.raises(CarrierProtocolError) as info:
            run(carrier, messages, upto + 1)
        assert info.value.close_code == error["close_code"]
        assert info.value.carrier == carrier


def test_every_carrier_has_fixtures() -> None:
    for carrier in ("twilio", "plivo", "vonage"):
        names = [p.stem for p in FILES if p.parent.name == carrier]
        assert any(n.startswith("valid") for n in names)
        assert sum(n.startswith("invalid") for n in names) >= 5
