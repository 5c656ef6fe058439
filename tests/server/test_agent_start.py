"""The agent's ``start``: what of the carrier's stream parameters reaches the agent."""

from __future__ import annotations

from gateway.carriers import StreamStarted
from gateway.metering import Role
from gateway.server.answer import agent_start
from gateway.store.models import CallRecord, CallStatus, Direction
from rymi_codecs import MULAW_8K

RECORD = CallRecord(
    id="call-1",
    carrier_call_id="CA123",
    tenant_id="tenant-1",
    agent_id="agent-1",
    number="+15555550100",
    carrier="twilio",
    direction=Direction.INBOUND,
    role=Role.OPERATOR,
    max_call_duration_s=600,
    status=CallStatus.LIVE,
    answered_at_ms=0,
    media_started_at_ms=None,
    checkpoint_at_ms=None,
    ended_at_ms=None,
    end_reason=None,
    audio_ms=0,
    billable_units=None,
    cost_micros=None,
)


def started(parameters: dict[str, str]) -> StreamStarted:
    return StreamStarted("MZ1", "CA123", MULAW_8K, parameters)


def test_our_own_parameters_stay_ours_and_the_caller_becomes_e164() -> None:
    start = agent_start(
        RECORD,
        started({"lt": "42", "from": "15551230000", "call_uuid": "u-1", "lang": "de"}),
        "agent-1",
    )
    assert start.from_ == "+15551230000"
    assert dict(start.parameters) == {"lang": "de"}  # no lease token, no call_uuid
    assert (start.call_id, start.tenant_id, start.agent_id) == ("call-1", "tenant-1", "agent-1")
    assert (start.to, start.carrier, start.carrier_call_id) == ("+15555550100", "twilio", "CA123")
    assert (start.direction, start.max_duration_s) == ("inbound", 600)


def test_a_non_numeric_or_missing_caller_is_passed_as_is_or_unknown() -> None:
    assert agent_start(RECORD, started({"from": "anonymous"}), "a").from_ == "anonymous"
    assert agent_start(RECORD, started({}), "a").from_ == "unknown"


def test_custom_parameters_are_capped_in_count_and_size() -> None:
    many = {f"{i:02d}{'k' * 70}": "v" * 2000 for i in range(40)}
    params = agent_start(RECORD, started(many), "a").parameters
    assert len(params) == 32
    assert all(len(k) == 64 and len(v) == 1024 for k, v in params.items())
