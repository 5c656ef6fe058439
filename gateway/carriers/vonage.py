"""Vonage Voice API (NCCO + WebSockets): HTTP side (carrier-protocols.md section 3).

* Answer request (3.1): GET query by default (``answer_method=POST`` sends JSON) with
  ``uuid``, ``conversation_uuid``, ``from`` (or ``from_user``), ``to``. No direction or
  account id: the call is recorded as ``inbound`` and ``account_id`` stays None.
* Signed webhooks (3.3): ``Authorization: Bearer <JWT>``, HS256 with the account's
  **signature secret**. We check the signature (PyJWT, HS256 only), the ``iat`` age
  against ``now`` (``max_age_s``, with ``clock_skew_s`` either side), ``exp`` if present,
  ``payload_hash`` when present (POST: SHA-256 of the raw body; GET: SHA-256 of the
  compact JSON of the query params in URL order, per Vonage support; 7.9 marks it
  unconfirmed, so the raw query string is also accepted), and the ``jti`` against the
  nonce store. PyJWT's own time checks are off: they read the clock.
* Upgrade (3.2): with ``authorization: {"type": "vonage"}`` in the endpoint, Vonage
  sends the same kind of JWT on the WebSocket upgrade; whether it carries a meaningful
  ``payload_hash`` there is unknown (7.10), so only signature, age and jti are checked.
* Answer NCCO: ``connect`` to a ``websocket`` endpoint, ``audio/l16;rate=16000``,
  ``headers`` at most 512 bytes. Refusal: NCCO has no reject action; an empty NCCO
  ends the call (no more actions -> the call completes, 3.6).
* Hang-up (3.6): ``PUT /v1/calls/{uuid}`` ``{"action":"hangup"}`` with an RS256
  *application* JWT signed with the Vonage application's private key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import jwt

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
from gateway.carriers.documents import check_media_url, path_segment, require_fields
from gateway.carriers.signing import NonceStore, require
from gateway.carriers.vonage_media import CONTENT_TYPES, VonageCarrierSide, VonageStream
from gateway.errors import CarrierProtocolError, CloseCode, SignatureError, ValidationError

__all__ = ["API_BASE_URL", "MAX_HEADERS_BYTES", "VonageAdapter"]

API_BASE_URL = "https://api.nexmo.com"
MAX_HEADERS_BYTES = 512
_JSON = "application/json"
_APP_JWT_TTL_S = 900  # what vonage_jwt.JwtClient uses for application JWTs


def _compact(value: Any, *, ascii_only: bool = False) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only).encode("utf-8")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode("ascii")


class VonageAdapter(CarrierAdapter):
    """Vonage's protocols; see the module docstring.

    Args:
        rate: the websocket sample rate to ask for (8000, 16000 or 24000 Hz).
        max_age_s: oldest accepted JWT ``iat``, in seconds.
        clock_skew_s: tolerated clock difference with Vonage, in seconds.
        sign_websocket: ask Vonage to sign the WebSocket upgrade
            (``authorization: {"type": "vonage"}``).
    """

    name = "vonage"

    def __init__(
        self,
        rate: int = 16000,
        *,
        max_age_s: float = 300.0,
        clock_skew_s: float = 30.0,
        sign_websocket: bool = True,
    ) -> None:
        self.content_type = f"audio/l16;rate={rate}"
        if self.content_type not in CONTENT_TYPES:
            raise ValidationError("rate", "expected 8000, 16000 or 24000")
        self.rate = rate
        self.max_age_s = max_age_s
        self.clock_skew_s = clock_skew_s
        self.sign_websocket = sign_websocket

    def parse_answer(self, request: HttpRequest) -> InboundCall:
        """See :meth:`CarrierAdapter.parse_answer` (GET query or POST JSON)."""
        params = request.query
        if request.method.upper() == "POST":
            params = self._json_params(request.body)
        first = require_fields(self.name, params, "uuid", "to")
        return InboundCall(
            carrier=self.name,
            call_id=first["uuid"],
            account_id=None,
            from_number=first.get("from") or first.get("from_user", ""),
            to_number=first["to"],
            direction="inbound",
            params=tuple(params),
        )

    def _json_params(self, body: bytes) -> list[tuple[str, str]]:
        try:
            obj = json.loads(body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise CarrierProtocolError(
                self.name, "body is not JSON", CloseCode.INVALID_PAYLOAD
            ) from None
        if not isinstance(obj, dict):
            raise CarrierProtocolError(
                self.name, "body is not a JSON object", CloseCode.INVALID_PAYLOAD
            )
        return [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in obj.items()]

    def _claims(self, request: HttpRequest, secret: str, now: float) -> dict[str, Any]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        require(scheme.lower() == "bearer" and bool(token), "Authorization: Bearer token missing")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise SignatureError("Bearer JWT is malformed or not signed with this secret") from None
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool):
            raise SignatureError("JWT iat missing")
        skew = self.clock_skew_s
        require(now - self.max_age_s - skew <= iat <= now + skew, "JWT iat outside the allowed age")
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            require(now <= exp + skew, "JWT expired")
        return claims

    def _check_jti(
        self, claims: dict[str, Any], now: float, nonces: NonceStore | None
    ) -> str | None:
        jti = claims.get("jti")
        if not isinstance(jti, str):
            return None
        if nonces is not None and not nonces.check_and_add(f"vonage:{jti}", now):
            raise SignatureError("JWT jti was already used (replay)")
        return jti

    def verify_request(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """See :meth:`CarrierAdapter.verify_request`; ``credential`` is the signature secret."""
        claims = self._claims(request, credential, now)
        claimed = claims.get("payload_hash")
        if claimed is not None:
            require(isinstance(claimed, str), "JWT payload_hash is not a string")
            found = False
            for candidate in self._payload_hashes(request):
                found |= hmac.compare_digest(candidate, str(claimed).lower().encode("utf-8"))
            require(found, "JWT payload_hash does not match the request")
        return self._check_jti(claims, now, nonces)

    def _payload_hashes(self, request: HttpRequest) -> list[bytes]:
        if request.method.upper() != "GET":
            return [_sha256(request.body)]
        query = dict(request.query)
        raw_query = request.url.partition("?")[2].encode("utf-8")
        return [
            _sha256(_compact(query)),
            _sha256(_compact(query, ascii_only=True)),
            _sha256(raw_query),
        ]

    def verify_upgrade(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """See :meth:`CarrierAdapter.verify_upgrade` (signature, age and jti only)."""
        return self._check_jti(self._claims(request, credential, now), now, nonces)

    def answer_document(self, media_url: str, parameters: Mapping[str, str]) -> Document:
        """See :meth:`CarrierAdapter.answer_document`: an NCCO ``connect`` to a websocket."""
        check_media_url("media_url", media_url)
        headers = dict(parameters)
        size = len(_compact(headers))
        if size > MAX_HEADERS_BYTES:
            raise ValidationError(
                "parameters", f"headers are {size} bytes as JSON; at most {MAX_HEADERS_BYTES}"
            )
        endpoint: dict[str, Any] = {
            "type": "websocket",
            "uri": media_url,
            "content-type": self.content_type,
            "headers": headers,
        }
        if self.sign_websocket:
            endpoint["authorization"] = {"type": "vonage"}
        # connect stays the last action: actions after it may start early (3.7).
        ncco = [{"action": "connect", "endpoint": [endpoint]}]
        return Document(_JSON, _compact(ncco))

    def refusal_document(self, reason: str = "busy") -> Document:
        """An empty NCCO: Vonage has no reject action, and no actions ends the call."""
        if reason not in ("busy", "rejected"):
            raise ValidationError("reason", "expected one of busy, rejected")
        return Document(_JSON, b"[]")

    def hangup_request(
        self, call_id: str, account_id: str, secret: str, *, now: float, base_url: str | None
    ) -> HangupRequest:
        """``account_id`` is the Vonage application id, ``secret`` its private key (PEM).

        ``base_url`` may be the answer request's ``region_url``.
        """
        claims = {
            "application_id": account_id,
            "iat": int(now),
            "exp": int(now) + _APP_JWT_TTL_S,
            "jti": secrets.token_hex(16),
        }
        try:
            token = jwt.encode(claims, secret, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            raise ValidationError("private_key", "is not a PEM RSA private key") from None
        url = (
            f"{(base_url or API_BASE_URL).rstrip('/')}/v1/calls/{path_segment('call_id', call_id)}"
        )
        headers = {"Authorization": f"Bearer {token}", "Content-Type": _JSON}
        return HangupRequest("PUT", url, headers, b'{"action":"hangup"}')

    def open_stream(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> VonageStream:
        """See :meth:`CarrierAdapter.open_stream`."""
        return VonageStream(max_message_bytes=max_message_bytes)

    def _token(self, secret: str, now: float, nonce: str, payload_hash: bytes | None) -> str:
        claims: dict[str, Any] = {"iat": int(now), "jti": nonce, "iss": "Vonage", "api_key": "rymi"}
        if payload_hash is not None:
            claims["payload_hash"] = payload_hash.decode("ascii")
        return jwt.encode(claims, secret, algorithm="HS256")

    def sign_answer_request(
        self, url: str, params: Mapping[str, str], credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """A GET answer webhook as Vonage sends it, with a signed Bearer JWT."""
        full = f"{url}?{urlencode(list(params.items()))}" if params else url
        token = self._token(credential, now, nonce, _sha256(_compact(dict(params))))
        return HttpRequest("GET", full, Headers({"Authorization": f"Bearer {token}"}))

    def sign_upgrade_request(
        self, url: str, credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """The upgrade GET with ``Authorization: Bearer`` (``authorization.type=vonage``)."""
        token = self._token(credential, now, nonce, None)
        return HttpRequest("GET", url, Headers({"Authorization": f"Bearer {token}"}))

    def simulate_carrier(
        self, call_id: str, custom_parameters: Mapping[str, str], *, rate: int = 16000
    ) -> CarrierSide:
        """See :meth:`CarrierAdapter.simulate_carrier`; ``call_uuid`` joins the headers."""
        return VonageCarrierSide({"call_uuid": call_id, **custom_parameters}, rate=rate)
