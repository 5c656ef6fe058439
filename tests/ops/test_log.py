"""Logging: JSON lines, the call bound to its lines, the secret net, the rate limiter."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator

import pytest

from gateway.log import (
    MAX_MESSAGE_CHARS,
    RateLimitedLogger,
    bind_call,
    configure_logging,
    current_call,
    get_logger,
    redact,
    register_secret,
)

Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure() -> Iterator[Configure]:
    """Configure logging into a buffer; put the root logger back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = ("gateway", "aiosqlite", "asyncio", "sqlalchemy", "alembic", "redis", "hpack")
    levels = {name: logging.getLogger(name).level for name in (*names, "aiohttp.access")}

    def make(log_format: str = "json", log_level: str = "info") -> io.StringIO:
        buffer = io.StringIO()
        configure_logging(log_format, log_level, stream=buffer)
        return buffer

    yield make
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_the_call_only_inside_its_context(configure: Configure) -> None:
    buffer = configure("json")
    log = get_logger("session")
    log.info("before")
    with bind_call("CA-1", "tenant-9") as bound:
        assert current_call() == bound
        log.info("inside %d", 1)
        get_logger("carrier", "twilio").warning("carrier line")
    log.info("after")
    assert current_call() is None

    before, inside, carrier, after = _lines(buffer)
    assert "call_id" not in before
    assert "call_id" not in after
    assert (inside["call_id"], inside["tenant_id"], inside["msg"]) == (
        "CA-1",
        "tenant-9",
        "inside 1",
    )
    assert (inside["logger"], inside["level"]) == ("gateway.session", "info")
    assert (carrier["logger"], carrier["call_id"]) == ("gateway.carrier.twilio", "CA-1")
    assert isinstance(inside["ts"], str)
    assert str(inside["ts"]).endswith("Z")


async def test_concurrent_calls_and_their_tasks_never_mix(configure: Configure) -> None:
    buffer = configure("json")
    log = get_logger("call")

    async def frame_task(n: int) -> None:
        await asyncio.sleep(0)
        log.info("task line %d", n)

    async def call(call_id: str) -> None:
        with bind_call(call_id, f"tenant-of-{call_id}"):
            for n in range(3):
                await asyncio.sleep(0)
                log.info("call line %d", n)
            # A task created inside the call inherits the binding (contextvars copy).
            await asyncio.gather(*(asyncio.create_task(frame_task(n)) for n in range(2)))

    await asyncio.gather(call("A"), call("B"))
    lines = _lines(buffer)
    assert len(lines) == 10
    assert all(line["tenant_id"] == f"tenant-of-{line['call_id']}" for line in lines)
    assert sum(line["call_id"] == "A" for line in lines) == 5


def test_text_format_shows_the_call(configure: Configure) -> None:
    buffer = configure("text")
    with bind_call("CA-7"):
        get_logger("media").info("hello")
    get_logger("media").info("bare")
    first, second = buffer.getvalue().splitlines()
    assert first.endswith("INFO gateway.media [call=CA-7 tenant=-]: hello")
    assert second.endswith("INFO gateway.media: bare")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_registered_canary_never_appears_in_any_output(
    configure: Configure, log_format: str
) -> None:
    buffer = configure(log_format)
    canary = f"CANARY{uuid.uuid4().hex}"
    register_secret(canary)
    log = get_logger("store", "secrets")
    log.warning("decrypted %s for tenant", canary)
    log.warning("in the message itself: " + canary)  # noqa: G003 - the case under test
    log.warning("in a dict %(value)s", {"value": canary})
    log.warning("in a repr %r", {"auth_token": canary})
    try:
        raise RuntimeError(f"driver said {canary}")
    except RuntimeError:
        log.exception("failure")
    log.warning("stack", stack_info=True, extra={"x": 1})
    output = buffer.getvalue()
    assert canary not in output
    assert output.count("***") >= 5
    assert "decrypted *** for tenant" in output


def test_secret_shaped_values_and_payloads_are_masked(configure: Configure) -> None:
    buffer = configure("json")
    log = get_logger("bridge")
    log.info("redis at redis://user:p4ssw0rd-secret@10.1.1.1:6379/0")
    log.info("header Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")
    log.info("key rymi_AbCdEfGhIjKlMnOpQrStUvWx created")
    log.info("query password=Sup3rS3cretPassw0rd&x=1")
    log.info("upgrade GET /media/twilio/v1.abcdefgh.ijklmnop HTTP/1.1")
    log.info("frame %s", b"\xff\x7f" * 80)
    text = buffer.getvalue()
    for leaked in ("p4ssw0rd", "eyJhbGci", "AbCdEfGh", "Sup3rS3cret", "abcdefgh", "\\u00ff"):
        assert leaked not in text, leaked
    msgs = [line["msg"] for line in _lines(buffer)]
    assert msgs[0] == "redis at redis://user:***@10.1.1.1:6379/0"
    assert msgs[4] == "upgrade GET /media/twilio/*** HTTP/1.1"
    assert msgs[5] == "frame <160 bytes>"


def test_short_values_are_not_registered_as_secrets() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"


def test_huge_messages_are_cut(configure: Configure) -> None:
    buffer = configure("json")
    get_logger("server").info("x" * (MAX_MESSAGE_CHARS * 3))
    (line,) = _lines(buffer)
    msg = str(line["msg"])
    assert len(msg) < MAX_MESSAGE_CHARS + 40
    assert msg.endswith(f"[{MAX_MESSAGE_CHARS * 2} chars cut]")


def test_debug_reaches_gateway_loggers_but_not_chatty_third_parties(configure: Configure) -> None:
    buffer = configure("json", "debug")
    logging.getLogger("aiosqlite").debug("executing SELECT 1")
    logging.getLogger("aiohttp.access").info("GET /media/twilio/tok 101")
    logging.getLogger("aiosqlite").info("opened")
    get_logger("session").debug("state change")
    assert [(line["logger"], line["msg"]) for line in _lines(buffer)] == [
        ("aiosqlite", "opened"),
        ("gateway.session", "state change"),
    ]


def test_info_level_hides_gateway_debug(configure: Configure) -> None:
    buffer = configure("json", "info")
    get_logger("session").debug("hidden")
    assert buffer.getvalue() == ""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_drops_excess_lines_and_reports_the_count(configure: Configure) -> None:
    buffer = configure("json", "debug")
    clock = FakeClock()
    frames = RateLimitedLogger(get_logger("media"), per_second=5, clock=clock)
    sent = [frames.debug("in", "frame %d", n) for n in range(100)]
    assert sum(sent) == 5
    assert frames.suppressed_total == 95
    assert frames.debug("out", "other key has its own budget")
    clock.now += 1.0
    assert frames.debug("in", "frame %d", 100)
    msgs = [line["msg"] for line in _lines(buffer)]
    assert msgs[:5] == [f"frame {n}" for n in range(5)]
    assert msgs[-1] == "frame 100 (95 similar lines suppressed)"
    assert len(msgs) == 7


def test_rate_limiter_costs_nothing_when_debug_is_off(configure: Configure) -> None:
    configure("json", "info")
    frames = RateLimitedLogger(get_logger("media"), per_second=1, clock=FakeClock())
    assert not any(frames.debug("in", "frame") for _ in range(10))
    assert frames.suppressed_total == 0


def test_rate_limiter_forgets_the_oldest_keys_beyond_its_bound(configure: Configure) -> None:
    configure("json", "debug")
    frames = RateLimitedLogger(get_logger("media"), per_second=1, max_keys=4, clock=FakeClock())
    for n in range(10):
        frames.debug(f"key-{n}", "line")
    assert frames.debug("key-0", "line")  # forgotten, so it has a fresh budget
    assert not frames.debug("key-9", "line")


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown log layer"):
        get_logger("nonsense")
    with pytest.raises(ValueError, match="log_format"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="log_level"):
        configure_logging("text", "verbose")
    with pytest.raises(ValueError, match="per_second"):
        RateLimitedLogger(logging.getLogger("x"), per_second=0)


def test_rate_limited_lines_name_the_real_caller(configure: Configure) -> None:
    configure("json", "debug")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        frames = RateLimitedLogger(get_logger("media"), clock=FakeClock())
        frames.debug("a", "via debug")
        frames.log(logging.INFO, "b", "via log")
    finally:
        logging.getLogger().removeHandler(keep)
    assert [r.funcName for r in records] == ["test_rate_limited_lines_name_the_real_caller"] * 2
