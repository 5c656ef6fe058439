"""Helpers shared by the answer/refusal documents and the carrier-role requests.

Documents are built with ``xml.etree.ElementTree`` and ``json`` so escaping is the
standard library's, never string concatenation. What XML cannot carry at all (control
characters) is refused up front with a :class:`~gateway.errors.ValidationError` naming
the field, instead of producing a document the carrier would reject.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlsplit

from gateway.carriers.base import InboundCall
from gateway.errors import CarrierProtocolError, CloseCode, ValidationError

__all__ = [
    "REFUSAL_REASONS",
    "basic_auth",
    "check_media_url",
    "check_xml_text",
    "form_params",
    "path_segment",
    "require_fields",
    "xml_document",
]

REFUSAL_REASONS = ("busy", "rejected")
"""Reasons a refusal document can give (TwiML ``<Reject reason>``, Plivo ``<Hangup reason>``)."""

# XML 1.0 section 2.2 "Char": anything else cannot appear in a document, escaped or not.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_xml_text(field: str, value: str) -> str:
    """Return ``value`` if XML 1.0 can carry it, else raise ValidationError on ``field``."""
    if _NOT_XML_CHAR.search(value):
        raise ValidationError(field, "contains a character XML 1.0 cannot carry")
    return value


def check_media_url(field: str, url: str, *, max_len: int = 2048) -> str:
    """Check a media socket URL: ``wss://`` (``ws://`` for local runs), no query string.

    The per-call token belongs in the path: Twilio drops query strings from
    ``<Stream url>`` (carrier-protocols.md section 1.7).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        raise ValidationError(field, "expected an absolute wss:// URL")
    if parts.query or parts.fragment:
        raise ValidationError(
            field, "must not carry a query or fragment; put the token in the path"
        )
    if len(url) > max_len:
        raise ValidationError(field, f"is {len(url)} characters; at most {max_len}")
    return check_xml_text(field, url)


def xml_document(root: ET.Element) -> bytes:
    """Serialize ``root`` with a UTF-8 XML declaration."""
    body: bytes = ET.tostring(
        root, encoding="utf-8", xml_declaration=False, short_empty_elements=True
    )
    return b'<?xml version="1.0" encoding="UTF-8"?>' + body


def form_params(carrier: str, body: bytes) -> list[tuple[str, str]]:
    """Decode an ``application/x-www-form-urlencoded`` body, keeping blanks and order."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise CarrierProtocolError(
            carrier, "form body is not valid UTF-8", CloseCode.INVALID_PAYLOAD
        ) from None
    return parse_qsl(text, keep_blank_values=True)


def require_fields(carrier: str, params: list[tuple[str, str]], *names: str) -> dict[str, str]:
    """The first value of each required field; raise naming the missing ones."""
    first: dict[str, str] = {}
    for key, value in params:
        first.setdefault(key, value)
    missing = [name for name in names if not first.get(name)]
    if missing:
        raise CarrierProtocolError(
            carrier, f"answer request lacks {', '.join(missing)}", CloseCode.INVALID_PAYLOAD
        )
    return first


def inbound_call(
    carrier: str,
    params: list[tuple[str, str]],
    ids: tuple[str, str | None, str, str],
    direction: str,
) -> InboundCall:
    """Build an :class:`InboundCall` from parsed params and the carrier's field names.

    Args:
        carrier: adapter name.
        params: every received field in order.
        ids: field names of (call id, account id or None, from, to).
        direction: the direction to record if the request has no ``Direction`` field.
    """
    call_key, account_key, from_key, to_key = ids
    required = (call_key, account_key, to_key) if account_key else (call_key, to_key)
    first = require_fields(carrier, params, *required)
    return InboundCall(
        carrier=carrier,
        call_id=first[call_key],
        account_id=first[account_key] if account_key else None,
        from_number=first.get(from_key, ""),
        to_number=first[to_key],
        direction=first.get("Direction", direction),
        params=tuple(params),
    )


def path_segment(field: str, value: str) -> str:
    """``value`` quoted for use as one URL path segment; refuses empty values."""
    if not value:
        raise ValidationError(field, "must not be empty")
    return quote(value, safe="")


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic ``Authorization`` header value (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def check_parameters(field: str, parameters: Mapping[str, str]) -> None:
    """Check metadata names and values are non-empty-named strings XML can carry."""
    for name, value in parameters.items():
        if not name:
            raise ValidationError(field, "parameter names must not be empty")
        check_xml_text(f"{field}.{name}", name + value)
