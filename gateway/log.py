"""Logging: one logger per layer, text or JSON lines, the call bound to every line, and a
safety net that keeps secrets and payloads out.

Loggers (``logging.getLogger(name)``; :func:`get_logger` checks the layer)::

    gateway.server   gateway.answer   gateway.media   gateway.call   gateway.session
    gateway.carrier.<name>   gateway.bridge   gateway.store.*   gateway.coordination
    gateway.metrics   gateway.serve

:func:`configure_logging` installs one handler on the root logger: text for a terminal
(default), one JSON object per line with ``RYMI_LOG_FORMAT=json``. Inside
``with bind_call(call_id, tenant_id):`` every line carries the call id and tenant id;
the binding is a :mod:`contextvars` variable, so tasks created inside the block (the
call's reader, writer and timer tasks) inherit it and concurrent calls never mix.

The safety net (:class:`SafetyFilter`) runs on every record before formatting:

* values registered with :func:`register_secret` (credentials once decrypted, agent
  secrets, master keys) are replaced by ``***`` wherever they appear, including
  exception text; so are secret-shaped strings: URL passwords, ``Bearer`` tokens,
  ``rymi_`` API keys, long values after ``password=``/``token=``/``secret=``, and the
  call token in a ``/media/<carrier>/<token>`` path;
* ``bytes`` arguments (audio, raw frames) are logged as ``<N bytes>``, never as content;
* messages longer than :data:`MAX_MESSAGE_CHARS` are cut.

Per-frame lines go through :class:`RateLimitedLogger`: debug level only, a few lines per
second per key, with the number of suppressed lines reported on the next one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

__all__ = [
    "LAYERS",
    "MAX_MESSAGE_CHARS",
    "CallContext",
    "ContextFilter",
    "JsonFormatter",
    "RateLimitedLogger",
    "SafetyFilter",
    "TextFormatter",
    "bind_call",
    "configure_logging",
    "current_call",
    "get_logger",
    "redact",
    "register_secret",
]

LAYERS = frozenset(
    {"server", "answer", "media", "call", "session", "carrier", "bridge", "store",
     "coordination", "metrics", "serve"}
)  # fmt: skip
"""The first part after ``gateway.`` of every gateway logger name."""

MAX_MESSAGE_CHARS = 4096
"""Longest message logged; longer ones are cut (a runaway repr must not flood the logs)."""

MIN_SECRET_CHARS = 8
"""Shorter values are not registered as secrets: redacting them would mangle ordinary text."""

_CHATTY = {
    # Third-party loggers that stay at INFO or above even when the gateway logs debug.
    "aiosqlite": logging.INFO,  # one debug line per SQL operation
    "asyncio": logging.INFO,
    "sqlalchemy": logging.WARNING,
    "alembic": logging.WARNING,  # one line per migration step
    "redis": logging.INFO,
    "picows": logging.WARNING,  # two INFO lines per agent connection (picows.client.<fd>)
    "hpack": logging.INFO,
    # aiohttp's access log would print every media URL, call token included.
    "aiohttp.access": logging.WARNING,
}
_HANDLER_MARK = "_rymi_handler"


def get_logger(layer: str, name: str | None = None) -> logging.Logger:
    """The logger of ``layer`` (one of :data:`LAYERS`), e.g. ``get_logger("carrier", "twilio")``.

    Raises:
        ValueError: ``layer`` is not a known layer.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown log layer {layer!r}; expected one of {sorted(LAYERS)}")
    return logging.getLogger(f"gateway.{layer}" + (f".{name}" if name else ""))


# -- the call bound to a context ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallContext:
    """The call the current task works for."""

    call_id: str
    tenant_id: str | None = None


_CALL: ContextVar[CallContext | None] = ContextVar("rymi_call", default=None)


@contextlib.contextmanager
def bind_call(call_id: str, tenant_id: str | None = None) -> Iterator[CallContext]:
    """Bind ``call_id``/``tenant_id`` to every log line of this context (and its tasks)."""
    context = CallContext(call_id, tenant_id)
    token = _CALL.set(context)
    try:
        yield context
    finally:
        _CALL.reset(token)


def current_call() -> CallContext | None:
    """The call bound to the current context, if any."""
    return _CALL.get()


class ContextFilter(logging.Filter):
    """Adds ``call_id`` and ``tenant_id`` (None outside a call) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CALL.get()
        record.call_id = context.call_id if context else None
        record.tenant_id = context.tenant_id if context else None
        return True


# -- the safety net ---------------------------------------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: re.Pattern[str] | None = None

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(://[^/@:\s]+:)[^/@\s]+@"), r"\1***@"),  # user:password@host
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\brymi_[A-Za-z0-9_-]{16,}"), "rymi_***"),  # secret API keys
    (
        re.compile(
            r"(?i)\b((?:password|passwd|secret|token|api[_-]?key|auth[_-]?token)"
            r"[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9+/_.=-]{12,}"
        ),
        r"\1***",
    ),
    (re.compile(r"(/media/[a-z]+/)[^\s/?\"']+"), r"\1***"),  # the call token in a media URL
)


def register_secret(value: str | bytes) -> None:
    """Never log ``value``: every occurrence is replaced by ``***`` from now on.

    Values shorter than :data:`MIN_SECRET_CHARS` are ignored (see there).
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) < MIN_SECRET_CHARS:
        return
    global _secret_re
    with _secrets_lock:
        if text in _secrets:
            return
        _secrets.add(text)
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secret_re = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """``text`` with registered secrets and secret-shaped values replaced by ``***``."""
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub("***", text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


def _safe_arg(arg: object) -> object:
    if isinstance(arg, bytes | bytearray | memoryview):
        return f"<{len(arg)} bytes>"
    return arg


class SafetyFilter(logging.Filter):
    """Renders each record's message safely: no bytes, no secrets, bounded length.

    It replaces ``record.msg`` by the rendered, redacted text (and ``record.args`` by
    ``()``) and the exception text by its redacted form, so every formatter downstream
    sees only the safe version.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_safe_arg(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _safe_arg(v) for k, v in args.items()}
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not lose the line
            message = f"{record.msg!s} (unformattable arguments)"
        message = redact(message)
        if len(message) > MAX_MESSAGE_CHARS:
            cut = len(message) - MAX_MESSAGE_CHARS
            message = f"{message[:MAX_MESSAGE_CHARS]}... [{cut} chars cut]"
        record.msg, record.args = message, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# -- formatters -------------------------------------------------------------------------


def _utc(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-11-21T06:26:09.123Z INFO gateway.call [call=CA1 tenant=t1] message``."""

    def format(self, record: logging.LogRecord) -> str:
        call_id = getattr(record, "call_id", None)
        bound = ""
        if call_id is not None:
            bound = f" [call={call_id} tenant={getattr(record, 'tenant_id', None) or '-'}]"
        line = f"{_utc(record)} {record.levelname} {record.name}{bound}: {record.getMessage()}"
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{record.stack_info}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, pid, call_id/tenant_id (in a
    call), exc (with an exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            doc["call_id"] = call_id
            doc["tenant_id"] = getattr(record, "tenant_id", None)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(
    log_format: str = "text", log_level: str = "info", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Install the gateway's handler on the root logger (replacing a previous one).

    Args:
        log_format: ``text`` or ``json`` (``OpsSettings.log_format``).
        log_level: ``debug``, ``info``, ``warning`` or ``error`` (``OpsSettings.log_level``).
        stream: where lines go (default: standard error).

    Returns:
        The installed handler.

    Raises:
        ValueError: an unknown format or level.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be text or json, got {log_format!r}")
    level = logging.getLevelNamesMapping().get(log_level.upper())
    if log_level.lower() not in ("debug", "info", "warning", "error") or level is None:
        raise ValueError(f"log_level must be debug, info, warning or error, got {log_level!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(SafetyFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))  # third parties never log debug
    logging.getLogger("gateway").setLevel(level)
    for name, floor in _CHATTY.items():
        logging.getLogger(name).setLevel(max(floor, level))
    return handler


# -- rate-limited per-frame logging ------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class RateLimitedLogger:
    """At most ``per_second`` lines per key (bursts up to ``burst``) through ``logger``.

    For per-frame events: ``frames.debug("in", "frame %d from carrier", seq)``. When the
    level is disabled the call costs one ``isEnabledFor`` check. Lines over the rate are
    counted; the next line of the key says how many were suppressed.

    Args:
        logger: where lines go.
        per_second: sustained lines per second per key.
        burst: lines allowed at once (default: ``per_second``, at least 1).
        clock: monotonic seconds (injected in tests).
        max_keys: keys remembered (least recently used forgotten beyond).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        per_second: float = 5.0,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        if not per_second > 0:
            raise ValueError(f"per_second must be > 0, got {per_second!r}")
        self.logger = logger
        self._rate = per_second
        self._burst = float(burst if burst is not None else max(1, int(per_second)))
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.suppressed_total = 0
        """Lines dropped so far, all keys."""

    def debug(self, key: str, msg: str, *args: object) -> bool:
        """Log at debug level unless ``key`` is over its rate; True if the line went out."""
        return self._log(logging.DEBUG, key, msg, args)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log at ``level`` unless ``key`` is over its rate; True if the line went out."""
        return self._log(level, key, msg, args)

    def _log(self, level: int, key: str, msg: str, args: tuple[object, ...]) -> bool:
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        bucket = self._bucket(key, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            bucket.suppressed += 1
            self.suppressed_total += 1
            return False
        bucket.tokens -= 1.0
        if bucket.suppressed:
            msg, args = f"{msg} (%d similar lines suppressed)", (*args, bucket.suppressed)
            bucket.suppressed = 0
        # stacklevel 3: the record names the caller of debug()/log(), not this module.
        self.logger.log(level, msg, *args, stacklevel=3)
        return True

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket
