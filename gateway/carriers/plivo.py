"""Plivo Voice + Audio Streaming: HTTP side (carrier-protocols.md section 2).

* Answer request (2.1): form POST (or GET query) with ``CallUUID``, ``From``, ``To``,
  ``Direction``; Plivo sends no account id on it.
* ``X-Plivo-Signature-V3`` + ``X-Plivo-Signature-V3-Nonce`` (2.3): base64
  HMAC-SHA256(auth token, signing URL + "." + nonce), where the signing URL is
  ``scheme://host/path`` plus, for GET, ``?k=v&...`` of the sorted query, and for POST
  ``?[sorted query "."]`` followed by ``k + v`` of the sorted form params
  (plivo/utils/signature_v3.py). The header may hold several comma-separated signatures.
  Plivo signs no timestamp, so nonces are remembered (:class:`NonceStore`) to refuse
  replays. The WebSocket upgrade is a signed GET; Plivo's Node stream SDK rebuilds its
  URL with ``https://`` (not ``wss://``); live behaviour is unconfirmed, so both schemes
  are accepted (both are bound to the same host and path).
* Answer document (2.2): ``<Stream bidirectional="true" keepCallAlive="true"
  contentType=...>wss://...</Stream>`` with metadata in ``extraHeaders``; refusal:
  ``<Hangup reason="busy"/>``.
* Hang-up (2.6): ``DELETE /v1/Account/{auth_id}/Call/{uuid}/`` with Basic auth.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    form_params,
    inbound_call,
    path_segment,
    xml_document,
)
from gateway.carriers.plivo_media import CONTENT_TYPES, PlivoCarrierSide, PlivoStream
from gateway.carriers.signing import NonceStore, b64_hmac, matches_any, replace_scheme, require
from gateway.errors import SignatureError, ValidationError

__all__ = ["API_BASE_URL", "NONCE_HEADER", "SIGNATURE_HEADER", "PlivoAdapter", "signing_url"]

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
API_BASE_URL = "https://api.plivo.com"

_EXTRA_HEADERS_MAX = 512  # bytes (2.2)
_ALNUM = re.compile("[A-Za-z0-9]+")  # the XML reference allows only these in extraHeaders
_XML = "text/xml; charset=utf-8"


def _sorted_query(pairs: list[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return "&".join(f"{key}={value}" for key in sorted(grouped) for value in sorted(grouped[key]))


def signing_url(method: str, url: str, form: list[tuple[str, str]]) -> str:
    """The string Plivo V3 signs (before ``"." + nonce``); see the module docstring."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = _sorted_query(parse_qsl(parts.query, keep_blank_values=True))
    if method.upper() == "GET" or not form:
        return f"{base}?{query}" if query else base
    grouped: dict[str, list[str]] = {}
    for key, value in form:
        grouped.setdefault(key, []).append(value)
    body = "".join(key + value for key in sorted(grouped) for value in sorted(grouped[key]))
    return f"{base}?{query + '.' if query else ''}{body}"


def _sign(token: str, signed_url: str, nonce: str) -> bytes:
    return b64_hmac(token.encode("utf-8"), f"{signed_url}.{nonce}".encode(), "sha256")


class PlivoAdapter(CarrierAdapter):
    """Plivo's protocols; see the module docstring.

    Args:
        content_type: the ``<Stream contentType>`` to ask for; one of
            ``audio/x-mulaw;rate=8000``, ``audio/x-l16;rate=8000``, ``audio/x-l16;rate=16000``.
            Always set explicitly: Plivo's pages disagree on the default (2.2).
    """

    name = "plivo"

    def __init__(self, content_type: str = "audio/x-mulaw;rate=8000") -> None:
        if content_type not in CONTENT_TYPES:
            raise ValidationError("content_type", f"expected one of {', '.join(CONTENT_TYPES)}")
        self.content_type = content_type

    def parse_answer(self, request: HttpRequest) -> InboundCall:
        """See :meth:`CarrierAdapter.parse_answer`."""
        params = request.query
        if request.method.upper() == "POST":
            params = form_params(self.name, request.body)
        return inbound_call(self.name, params, ("CallUUID", None, "From", "To"), "inbound")

    def _check(
        self,
        request: HttpRequest,
        credential: str,
        urls: list[str],
        form: list[tuple[str, str]],
        replay: tuple[float, NonceStore | None],
    ) -> str:
        header = request.headers.get(SIGNATURE_HEADER, "")
        nonce = request.headers.get(NONCE_HEADER, "")
        require(bool(header and nonce), f"{SIGNATURE_HEADER} or {NONCE_HEADER} header missing")
        method = request.method.upper()
        expected = [_sign(credential, signing_url(method, url, form), nonce) for url in urls]
        offered = [sig.strip().encode("utf-8") for sig in header.split(",")]
        found = False
        for signature in offered:
            found |= matches_any(signature, expected)
        require(found, f"{SIGNATURE_HEADER} does not match")
        now, nonces = replay
        if nonces is not None and not nonces.check_and_add(f"plivo:{nonce}", now):
            raise SignatureError(f"{NONCE_HEADER} was already used (replay)")
        return nonce

    def verify_request(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """See :meth:`CarrierAdapter.verify_request`; returns the nonce."""
        form = form_params(self.name, request.body) if request.method.upper() == "POST" else []
        return self._check(request, credential, [request.url], form, (now, nonces))

    def verify_upgrade(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """See :meth:`CarrierAdapter.verify_upgrade` (https:// and wss:// forms accepted)."""
        scheme = urlsplit(request.url).scheme
        secure = scheme in ("https", "wss")
        urls = [replace_scheme(request.url, "https" if secure else "http")]
        urls.append(replace_scheme(request.url, "wss" if secure else "ws"))
        return self._check(request, credential, urls, [], (now, nonces))

    def answer_document(self, media_url: str, parameters: Mapping[str, str]) -> Document:
        """See :meth:`CarrierAdapter.answer_document`: a bidirectional ``<Stream>``."""
        check_media_url("media_url", media_url)
        for name, value in parameters.items():
            if not (_ALNUM.fullmatch(name) and _ALNUM.fullmatch(value)):
                raise ValidationError(
                    f"parameters.{name}", "extraHeaders names and values must be [A-Za-z0-9]+"
                )
        extra = ",".join(f"{name}={value}" for name, value in parameters.items())
        if len(extra) > _EXTRA_HEADERS_MAX:
            raise ValidationError("parameters", f"extraHeaders is over {_EXTRA_HEADERS_MAX} bytes")
        root = ET.Element("Response")
        attrs = {
            "bidirectional": "true",
            "keepCallAlive": "true",  # without it a lone <Stream> does not hold the call (2.7)
            "contentType": self.content_type,
        }
        if extra:
            attrs["extraHeaders"] = extra
        ET.SubElement(root, "Stream", attrs).text = media_url
        return Document(_XML, xml_document(root))

    def refusal_document(self, reason: str = "busy") -> Document:
        """See :meth:`CarrierAdapter.refusal_document`: ``<Hangup reason=.../>``."""
        if reason not in REFUSAL_REASONS:
            raise ValidationError("reason", f"expected one of {', '.join(REFUSAL_REASONS)}")
        root = ET.Element("Response")
        ET.SubElement(root, "Hangup", reason=reason)
        return Document(_XML, xml_document(root))

    def hangup_request(
        self, call_id: str, account_id: str, secret: str, *, now: float, base_url: str | None
    ) -> HangupRequest:
        """``DELETE`` the call; ``account_id`` is the auth id, ``secret`` the auth token."""
        url = (
            f"{(base_url or API_BASE_URL).rstrip('/')}/v1/Account/"
            f"{path_segment('account_id', account_id)}/Call/{path_segment('call_id', call_id)}/"
        )
        return HangupRequest("DELETE", url, {"Authorization": basic_auth(account_id, secret)})

    def open_stream(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> PlivoStream:
        """See :meth:`CarrierAdapter.open_stream`."""
        return PlivoStream(max_message_bytes=max_message_bytes)

    def _signed_headers(self, signed: str, credential: str, nonce: str) -> dict[str, str]:
        return {SIGNATURE_HEADER: _sign(credential, signed, nonce).decode(), NONCE_HEADER: nonce}

    def sign_answer_request(
        self, url: str, params: Mapping[str, str], credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """A form POST as Plivo sends it, with the V3 signature and nonce."""
        form = list(params.items())
        headers = self._signed_headers(signing_url("POST", url, form), credential, nonce)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return HttpRequest("POST", url, Headers(headers), urlencode(form).encode("utf-8"))

    def sign_upgrade_request(
        self, url: str, credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """The upgrade GET, signed over the ``https://`` form of the URL (Node stream SDK)."""
        https = replace_scheme(url, "https" if urlsplit(url).scheme == "wss" else "http")
        headers = self._signed_headers(signing_url("GET", https, []), credential, nonce)
        return HttpRequest("GET", url, Headers(headers))

    def simulate_carrier(
        self, call_id: str, custom_parameters: Mapping[str, str], *, rate: int = 8000
    ) -> CarrierSide:
        """See :meth:`CarrierAdapter.simulate_carrier`; uses this adapter's content type."""
        return PlivoCarrierSide(call_id, custom_parameters, content_type=self.content_type)
