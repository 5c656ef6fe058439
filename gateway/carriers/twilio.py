"""Twilio Programmable Voice + Media Streams: HTTP side (carrier-protocols.md section 1).

* Answer request (1.1): form POST (or GET query) with ``CallSid``, ``AccountSid``,
  ``From``, ``To``, ``Direction``; unknown fields are kept, because Twilio adds fields
  over time and all of them are signed.
* ``X-Twilio-Signature`` (1.3): base64 HMAC-SHA1(auth token, URL + each POST param name
  and value, names sorted, values sorted and de-duplicated). JSON bodies instead carry
  ``bodySHA256`` (hex SHA-256 of the body) in the query and the URL alone is signed. The
  port quirk: like the SDK we accept the URL with the default port added or any port
  removed. The media WebSocket upgrade is signed over the ``wss://`` URL, no params.
* Answer document (1.2): ``<Connect><Stream url>`` (bidirectional) with ``<Parameter>``s,
  each name + value under 500 characters; refusal: ``<Reject reason="busy"/>``.
* Hang-up (1.6): ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``
  ``Status=completed`` with HTTP Basic ``AccountSid:AuthToken``.

The media socket lives in :mod:`gateway.carriers.twilio_media`.
"""

from __future__ import annotations

import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from gateway.carriers.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CarrierAdapter,
    CarrierSide,
    Document,
    HangupRequest,
    Headers,
    HttpRequest,
    InboundCall,
)
from gateway.carriers.documents import (
    REFUSAL_REASONS,
    basic_auth,
    check_media_url,
    check_parameters,
    form_params,
    inbound_call,
    path_segment,
    xml_document,
)
from gateway.carriers.signing import NonceStore, b64_hmac, matches_any, port_variants, require
from gateway.carriers.signing import replace_scheme as _replace_scheme
from gateway.carriers.twilio_media import TwilioCarrierSide, TwilioStream
from gateway.errors import ValidationError

__all__ = ["API_BASE_URL", "SIGNATURE_HEADER", "TwilioAdapter", "signing_string"]

SIGNATURE_HEADER = "X-Twilio-Signature"
API_BASE_URL = "https://api.twilio.com"
"""Default REST host; regional hosts are ``https://api.{edge}.{region}.twilio.com``."""

_MAX_PARAMETER_CHARS = 500  # <Parameter> name + value must be < 500 characters (1.2)
_XML = "text/xml; charset=utf-8"


def signing_string(url: str, params: list[tuple[str, str]]) -> str:
    """URL followed by ``name + value`` for each param, names then values sorted, unique.

    Mirrors ``RequestValidator.compute_signature`` (twilio/request_validator.py).
    """
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    parts = [url]
    for name in sorted(values):
        parts.extend(name + value for value in sorted(values[name]))
    return "".join(parts)


def _sign(token: str, text: str) -> bytes:
    return b64_hmac(token.encode("utf-8"), text.encode("utf-8"), "sha1")


def _check(token: str, urls: list[str], params: list[tuple[str, str]], header: str) -> None:
    candidates = [_sign(token, signing_string(url, params)) for url in urls]
    require(matches_any(header.encode("utf-8"), candidates), f"{SIGNATURE_HEADER} does not match")


def _signature_header(request: HttpRequest) -> str:
    header = request.headers.get(SIGNATURE_HEADER, "")
    require(bool(header), f"{SIGNATURE_HEADER} header missing")
    return header


def _ws_scheme(url: str) -> str:
    scheme = urlsplit(url).scheme
    return _replace_scheme(url, {"https": "wss", "http": "ws"}.get(scheme, scheme))


class TwilioAdapter(CarrierAdapter):
    """Twilio's protocols; see the module docstring."""

    name = "twilio"

    def parse_answer(self, request: HttpRequest) -> InboundCall:
        """See :meth:`CarrierAdapter.parse_answer`."""
        params = request.query
        if request.method.upper() == "POST":
            params = form_params(self.name, request.body)
        return inbound_call(
            self.name, params, ("CallSid", "AccountSid", "From", "To"), direction="inbound"
        )

    def verify_request(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """See :meth:`CarrierAdapter.verify_request`. Twilio signs no timestamp or nonce."""
        header = _signature_header(request)
        query = parse_qs(urlsplit(request.url).query)
        params: list[tuple[str, str]] = []
        if "bodySHA256" in query:
            # JSON-body variant: the body is bound by its hash in the (signed) URL.
            digest = hashlib.sha256(request.body).hexdigest().encode("ascii")
            claimed = query["bodySHA256"][0].encode("utf-8")
            require(hmac.compare_digest(digest, claimed), "bodySHA256 does not match the body")
        elif request.method.upper() == "POST":
            params = form_params(self.name, request.body)
        _check(credential, port_variants(request.url), params, header)
        return None

    def verify_upgrade(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """See :meth:`CarrierAdapter.verify_upgrade`: signed over the ``wss://`` URL."""
        header = _signature_header(request)
        _check(credential, port_variants(_ws_scheme(request.url)), [], header)
        return None

    def answer_document(self, media_url: str, parameters: Mapping[str, str]) -> Document:
        """See :meth:`CarrierAdapter.answer_document`: ``<Connect><Stream>``."""
        check_media_url("media_url", media_url)
        check_parameters("parameters", parameters)
        root = ET.Element("Response")
        stream = ET.SubElement(ET.SubElement(root, "Connect"), "Stream", url=media_url)
        for name, value in parameters.items():
            if len(name) + len(value) >= _MAX_PARAMETER_CHARS:
                raise ValidationError(
                    f"parameters.{name}", f"name + value must be under {_MAX_PARAMETER_CHARS} chars"
                )
            ET.SubElement(stream, "Parameter", name=name, value=value)
        return Document(_XML, xml_document(root))

    def refusal_document(self, reason: str = "busy") -> Document:
        """See :meth:`CarrierAdapter.refusal_document`: ``<Reject reason=.../>``."""
        if reason not in REFUSAL_REASONS:
            raise ValidationError("reason", f"expected one of {', '.join(REFUSAL_REASONS)}")
        root = ET.Element("Response")
        ET.SubElement(root, "Reject", reason=reason)
        return Document(_XML, xml_document(root))

    def hangup_request(
        self, call_id: str, account_id: str, secret: str, *, now: float, base_url: str | None
    ) -> HangupRequest:
        """``Status=completed`` on the call resource; ``secret`` is the auth token."""
        account = path_segment("account_id", account_id)
        call = path_segment("call_id", call_id)
        root = (base_url or API_BASE_URL).rstrip("/")
        url = f"{root}/2010-04-01/Accounts/{account}/Calls/{call}.json"
        headers = {
            "Authorization": basic_auth(account_id, secret),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return HangupRequest("POST", url, headers, b"Status=completed")

    def open_stream(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> TwilioStream:
        """See :meth:`CarrierAdapter.open_stream`."""
        return TwilioStream(max_message_bytes=max_message_bytes)

    def sign_answer_request(
        self, url: str, params: Mapping[str, str], credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """A form POST as Twilio sends it, with ``X-Twilio-Signature``."""
        pairs = list(params.items())
        signature = _sign(credential, signing_string(url, pairs)).decode("ascii")
        headers = Headers(
            {
                "Content-Type": "application/x-www-form-urlencoded",
                SIGNATURE_HEADER: signature,
            }
        )
        return HttpRequest("POST", url, headers, urlencode(pairs).encode("utf-8"))

    def sign_upgrade_request(
        self, url: str, credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """The WebSocket upgrade GET, signed over the ``wss://`` URL."""
        signature = _sign(credential, signing_string(_ws_scheme(url), [])).decode("ascii")
        return HttpRequest("GET", url, Headers({SIGNATURE_HEADER: signature}))

    def simulate_carrier(
        self, call_id: str, custom_parameters: Mapping[str, str], *, rate: int = 8000
    ) -> CarrierSide:
        """See :meth:`CarrierAdapter.simulate_carrier` (Twilio is always μ-law 8 kHz)."""
        return TwilioCarrierSide(call_id, custom_parameters)
