"""Signature checks against signatures made by the carriers' official SDKs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

import jwt
import pytest
import vonage_jwt
from plivo.utils.signature_v3 import (
    construct_get_url,
    construct_post_url,
    get_signature_v3,
    validate_v3_signature,
)
from twilio.request_validator import RequestValidator

from gateway.carriers import Headers, HttpRequest, MemoryNonceStore, get
from gateway.carriers.plivo import NONCE_HEADER
from gateway.errors import CarrierProtocolError, SignatureError

TOKEN = "twilio-auth-token-0123456789abcdef"
PLIVO_TOKEN = "plivo-auth-token-0123456789abcdef"
SECRET = "vonage-signature-secret-" + "0123456789abcdef" * 4
NOW = 1_750_000_000.0
URL = "https://gw.example.com/inbound/twilio"
PARAMS = {
    "CallSid": "CA" + "a" * 32,
    "AccountSid": "AC" + "b" * 32,
    "From": "+14155550100",
    "To": "+14155550199",
    "Direction": "inbound",
    "CallStatus": "ringing",
    "Unknown_New_Field": "é ü &=+",
}


def tampers(data: bytes) -> Iterator[bytes]:
    """Every single-byte change of ``data`` (each byte XOR 1)."""
    for i in range(len(data)):
        yield data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]


def twilio_request(url: str, body: bytes, signature: str) -> HttpRequest:
    return HttpRequest("POST", url, Headers({"X-Twilio-Signature": signature}), body)


# --- Twilio -----------------------------------------------------------------------------

TWILIO = get("twilio")


def test_twilio_sdk_test_vector() -> None:
    # twilio-python tests/unit/test_request_validator.py vector (carrier-protocols.md 1.3).
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    req = twilio_request(url, urlencode(params).encode(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert TWILIO.verify_request(req, "12345", now=NOW, nonces=None) is None
    with pytest.raises(SignatureError):
        TWILIO.verify_request(req, "12346", now=NOW, nonces=None)


def test_twilio_accepts_sdk_signature_and_rejects_every_tamper() -> None:
    sig = RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    body = urlencode(PARAMS).encode()
    TWILIO.verify_request(twilio_request(URL, body, sig), TOKEN, now=NOW, nonces=None)
    for bad_url in tampers(URL.encode()):
        req = twilio_request(bad_url.decode("latin-1"), body, sig)
        with pytest.raises(SignatureError):
            TWILIO.verify_request(req, TOKEN, now=NOW, nonces=None)
    for bad_sig in tampers(sig.encode()):
        req = twilio_request(URL, body, bad_sig.decode("latin-1"))
        with pytest.raises(SignatureError):
            TWILIO.verify_request(req, TOKEN, now=NOW, nonces=None)
    with pytest.raises(SignatureError, match="does not match") as info:
        TWILIO.verify_request(twilio_request(URL, body, sig), TOKEN + "x", now=NOW, nonces=None)
    assert TOKEN not in str(info.value)
    assert sig not in str(info.value)


def test_twilio_body_tamper_is_signature_error_only() -> None:
    sig = RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    body = urlencode(PARAMS).encode()
    for bad_body in tampers(body):
        try:
            TWILIO.verify_request(twilio_request(URL, bad_body, sig), TOKEN, now=NOW, nonces=None)
        except (SignatureError, CarrierProtocolError):  # not UTF-8 -> protocol error
            continue
        # Some tampers keep the same decoded params (e.g. '+' vs '%20'): only then accept.
        assert sorted(parse_qsl(bad_body.decode(), keep_blank_values=True)) == sorted(
            PARAMS.items()
        )


@pytest.mark.parametrize(
    ("signed", "received"),
    [
        ("https://gw.example.com:443/inbound/twilio", "https://gw.example.com/inbound/twilio"),
        ("https://gw.example.com/inbound/twilio", "https://gw.example.com:443/inbound/twilio"),
        ("https://gw.example.com/inbound/twilio", "https://gw.example.com:8443/inbound/twilio"),
    ],
)
def test_twilio_port_quirk(signed: str, received: str) -> None:
    sig = RequestValidator(TOKEN).compute_signature(signed, PARAMS)
    assert RequestValidator(TOKEN).validate(received, PARAMS, sig)  # the SDK agrees
    req = twilio_request(received, urlencode(PARAMS).encode(), sig)
    TWILIO.verify_request(req, TOKEN, now=NOW, nonces=None)


def test_twilio_body_sha256_variant() -> None:
    body = '{"property": "value", "boolean": true}'
    validator = RequestValidator("12345")
    digest = validator.compute_hash(body)
    assert digest == "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    url = f"https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={digest}"
    sig = validator.compute_signature(url, {})
    assert sig == "a9nBmqA0ju/hNViExpshrM61xv4="
    req = twilio_request(url, body.encode(), sig)
    TWILIO.verify_request(req, "12345", now=NOW, nonces=None)
    for bad in tampers(body.encode()):
        with pytest.raises(SignatureError, match="bodySHA256"):
            TWILIO.verify_request(twilio_request(url, bad, sig), "12345", now=NOW, nonces=None)


def test_twilio_websocket_upgrade_signed_over_wss() -> None:
    public = "https://gw.example.com/media/twilio/TOKEN123"
    sig = RequestValidator(TOKEN).compute_signature(
        "wss://gw.example.com/media/twilio/TOKEN123", {}
    )
    req = HttpRequest("GET", public, Headers({"x-twilio-signature": sig}))
    TWILIO.verify_upgrade(req, TOKEN, now=NOW, nonces=None)
    https_sig = RequestValidator(TOKEN).compute_signature(public, {})
    with pytest.raises(SignatureError):
        TWILIO.verify_upgrade(
            HttpRequest("GET", public, Headers({"X-Twilio-Signature": https_sig})),
            TOKEN,
            now=NOW,
            nonces=None,
        )
    with pytest.raises(SignatureError, match="missing"):
        TWILIO.verify_upgrade(HttpRequest("GET", public), TOKEN, now=NOW, nonces=None)


def test_twilio_carrier_role_signing_matches_sdk() -> None:
    req = TWILIO.sign_answer_request(URL, PARAMS, TOKEN, now=NOW, nonce="n")
    assert req.headers["X-Twilio-Signature"] == RequestValidator(TOKEN).compute_signature(
        URL, PARAMS
    )
    up = TWILIO.sign_upgrade_request(
        "wss://gw.example.com/media/twilio/T", TOKEN, now=NOW, nonce=""
    )
    assert RequestValidator(TOKEN).validate(
        "wss://gw.example.com/media/twilio/T", {}, up.headers["X-Twilio-Signature"]
    )
    TWILIO.verify_upgrade(up, TOKEN, now=NOW, nonces=None)


def test_twilio_get_answer_signed_over_query() -> None:
    url = URL + "?" + urlencode(PARAMS)
    sig = RequestValidator(TOKEN).compute_signature(url, {})
    TWILIO.verify_request(
        HttpRequest("GET", url, Headers({"X-Twilio-Signature": sig})), TOKEN, now=NOW, nonces=None
    )


# --- Plivo ------------------------------------------------------------------------------

PLIVO = get("plivo")
PLIVO_URL = "https://gw.example.com/inbound/plivo"
PLIVO_PARAMS = {
    "CallUUID": str(uuid.UUID(int=7)),
    "From": "14155550100",
    "To": "14155550199",
    "Direction": "inbound",
    "Weird": "a&b=c é",
}


def plivo_post(url: str, body: bytes, sig: str, nonce: str) -> HttpRequest:
    headers = Headers({"X-Plivo-Signature-V3": sig, NONCE_HEADER: nonce})
    return HttpRequest("POST", url, headers, body)


def plivo_sdk_post_sig(url: str, params: dict[str, str], nonce: str) -> str:
    base = construct_post_url(url, dict(params)).decode()
    return str(get_signature_v3(PLIVO_TOKEN.encode(), base, nonce.encode()).decode())


@pytest.mark.parametrize("url", [PLIVO_URL, PLIVO_URL + "?tenant=t1&a=2&a=1"])
def test_plivo_accepts_sdk_signature_and_rejects_tampers(url: str) -> None:
    nonce = "12345678901234567890"
    sig = plivo_sdk_post_sig(url, PLIVO_PARAMS, nonce)
    assert validate_v3_signature("POST", url, nonce, PLIVO_TOKEN, sig, dict(PLIVO_PARAMS))
    body = urlencode(PLIVO_PARAMS).encode()
    store = MemoryNonceStore()
    assert (
        PLIVO.verify_request(plivo_post(url, body, sig, nonce), PLIVO_TOKEN, now=NOW, nonces=store)
        == nonce
    )
    with pytest.raises(SignatureError, match="replay"):
        PLIVO.verify_request(
            plivo_post(url, body, sig, nonce), PLIVO_TOKEN, now=NOW + 1, nonces=store
        )
    for bad_sig in tampers(sig.encode()):
        with pytest.raises(SignatureError):
            PLIVO.verify_request(
                plivo_post(url, body, bad_sig.decode("latin-1"), nonce),
                PLIVO_TOKEN,
                now=NOW,
                nonces=None,
            )
    for bad_url in tampers(url.encode()):
        with pytest.raises(SignatureError):
            PLIVO.verify_request(
                plivo_post(bad_url.decode("latin-1"), body, sig, nonce),
                PLIVO_TOKEN,
                now=NOW,
                nonces=None,
            )
    for bad_nonce in tampers(nonce.encode()):
        with pytest.raises(SignatureError):
            PLIVO.verify_request(
                plivo_post(url, body, sig, bad_nonce.decode()), PLIVO_TOKEN, now=NOW, nonces=None
            )
    with pytest.raises(SignatureError):
        PLIVO.verify_request(
            plivo_post(url, body, sig, nonce), PLIVO_TOKEN[:-1], now=NOW, nonces=None
        )


def test_plivo_body_tampers() -> None:
    nonce = "n-1"
    sig = plivo_sdk_post_sig(PLIVO_URL, PLIVO_PARAMS, nonce)
    body = urlencode(PLIVO_PARAMS).encode()

    for bad in tampers(body):
        try:
            PLIVO.verify_request(
                plivo_post(PLIVO_URL, bad, sig, nonce), PLIVO_TOKEN, now=NOW, nonces=None
            )
        except (SignatureError, CarrierProtocolError):
            continue
        assert sorted(parse_qsl(bad.decode(), keep_blank_values=True)) == sorted(
            PLIVO_PARAMS.items()
        )


def test_plivo_several_signatures_in_one_header() -> None:
    nonce = "abc"
    good = plivo_sdk_post_sig(PLIVO_URL, PLIVO_PARAMS, nonce)
    other = get_signature_v3(b"other-token", "x", b"abc").decode()
    body = urlencode(PLIVO_PARAMS).encode()
    for header in (f"{other},{good}", f"{good},{other}", f"{other}, {good}"):
        PLIVO.verify_request(
            plivo_post(PLIVO_URL, body, header, nonce), PLIVO_TOKEN, now=NOW, nonces=None
        )
    with pytest.raises(SignatureError):
        PLIVO.verify_request(
            plivo_post(PLIVO_URL, body, f"{other},{other}", nonce),
            PLIVO_TOKEN,
            now=NOW,
            nonces=None,
        )


def test_plivo_get_and_empty_post() -> None:
    ascii_params = {k: v for k, v in PLIVO_PARAMS.items() if v.isascii()}  # SDK: GET is ASCII-only
    url = PLIVO_URL + "?" + urlencode(ascii_params)
    base = construct_get_url(url, {}).decode()
    sig = get_signature_v3(PLIVO_TOKEN.encode(), base, b"n2").decode()
    req = HttpRequest("GET", url, Headers({"X-Plivo-Signature-V3": sig, NONCE_HEADER: "n2"}))
    PLIVO.verify_request(req, PLIVO_TOKEN, now=NOW, nonces=MemoryNonceStore())
    sig = plivo_sdk_post_sig(PLIVO_URL, {}, "n3")
    PLIVO.verify_request(plivo_post(PLIVO_URL, b"", sig, "n3"), PLIVO_TOKEN, now=NOW, nonces=None)


def test_plivo_missing_headers() -> None:
    with pytest.raises(SignatureError, match="missing"):
        PLIVO.verify_request(HttpRequest("POST", PLIVO_URL), PLIVO_TOKEN, now=NOW, nonces=None)


@pytest.mark.parametrize("scheme", ["https", "wss"])
def test_plivo_websocket_upgrade(scheme: str) -> None:
    ws_url = "wss://gw.example.com/media/plivo/TOK"
    signed = f"{scheme}://gw.example.com/media/plivo/TOK"
    sig = get_signature_v3(
        PLIVO_TOKEN.encode(), construct_get_url(signed, {}).decode(), b"up1"
    ).decode()
    assert validate_v3_signature(
        "GET", signed.replace("wss", "https"), "up1", PLIVO_TOKEN, sig
    ) == (scheme == "https")
    req = HttpRequest("GET", ws_url, Headers({"X-Plivo-Signature-V3": sig, NONCE_HEADER: "up1"}))
    store = MemoryNonceStore()
    PLIVO.verify_upgrade(req, PLIVO_TOKEN, now=NOW, nonces=store)
    with pytest.raises(SignatureError, match="replay"):
        PLIVO.verify_upgrade(req, PLIVO_TOKEN, now=NOW, nonces=store)


def test_plivo_carrier_role_signing_matches_sdk() -> None:
    req = PLIVO.sign_answer_request(PLIVO_URL, PLIVO_PARAMS, PLIVO_TOKEN, now=NOW, nonce="n9")
    assert validate_v3_signature(
        "POST",
        PLIVO_URL,
        "n9",
        PLIVO_TOKEN,
        req.headers["X-Plivo-Signature-V3"],
        dict(PLIVO_PARAMS),
    )
    up = PLIVO.sign_upgrade_request(
        "wss://gw.example.com/media/plivo/T", PLIVO_TOKEN, now=NOW, nonce="n8"
    )
    assert validate_v3_signature(
        "GET",
        "https://gw.example.com/media/plivo/T",
        "n8",
        PLIVO_TOKEN,
        up.headers["X-Plivo-Signature-V3"],
    )
    PLIVO.verify_upgrade(up, PLIVO_TOKEN, now=NOW, nonces=None)


def test_nonce_store_expiry_and_bound() -> None:
    store = MemoryNonceStore(ttl_s=10, max_entries=2)
    assert store.check_and_add("a", 0)
    assert not store.check_and_add("a", 9)
    assert store.check_and_add("a", 10.5)  # expired, seen anew
    assert store.check_and_add("b", 11)
    assert store.check_and_add("c", 12)  # evicts the oldest ("a")
    assert len(store) == 2
    assert store.check_and_add("a", 12)
    with pytest.raises(ValueError, match="positive"):
        MemoryNonceStore(ttl_s=0)


# --- Vonage -----------------------------------------------------------------------------

VONAGE = get("vonage")
V_URL = "https://gw.example.com/inbound/vonage"


def vonage_token(secret: str = SECRET, **claims: object) -> str:
    base: dict[str, object] = {
        "iat": int(NOW),
        "jti": uuid.uuid4().hex,
        "iss": "Vonage",
        "api_key": "abc123",
        "application_id": "app-1",
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm="HS256")


def bearer(token: str) -> Headers:
    return Headers({"Authorization": f"Bearer {token}"})


def test_vonage_post_with_payload_hash() -> None:
    body = b'{"uuid":"u1","to":"447700900000","from":"447700900001"}'
    token = vonage_token(payload_hash=hashlib.sha256(body).hexdigest())
    assert vonage_jwt.verify_signature(token, SECRET)
    req = HttpRequest("POST", V_URL, bearer(token), body)
    store = MemoryNonceStore()
    jti = VONAGE.verify_request(req, SECRET, now=NOW + 10, nonces=store)
    assert isinstance(jti, str)
    with pytest.raises(SignatureError, match="replay"):
        VONAGE.verify_request(req, SECRET, now=NOW + 11, nonces=store)
    for bad in tampers(body):
        with pytest.raises(SignatureError, match="payload_hash"):
            VONAGE.verify_request(
                HttpRequest("POST", V_URL, bearer(token), bad), SECRET, now=NOW, nonces=None
            )
    for bad_tok in tampers(token.encode()):
        with pytest.raises(SignatureError):
            VONAGE.verify_request(
                HttpRequest("POST", V_URL, bearer(bad_tok.decode("latin-1")), body),
                SECRET,
                now=NOW,
                nonces=None,
            )
    with pytest.raises(SignatureError) as info:
        VONAGE.verify_request(req, SECRET + "x", now=NOW, nonces=None)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("iat", "ok"),
    [(NOW, True), (NOW - 300, True), (NOW - 331, False), (NOW + 29, True), (NOW + 31, False)],
)
def test_vonage_iat_age(iat: float, ok: bool) -> None:
    req = HttpRequest("POST", V_URL, bearer(vonage_token(iat=int(iat))), b"{}")
    if ok:
        VONAGE.verify_request(req, SECRET, now=NOW, nonces=None)
    else:
        with pytest.raises(SignatureError, match="iat"):
            VONAGE.verify_request(req, SECRET, now=NOW, nonces=None)


def test_vonage_claim_problems() -> None:
    for headers in (Headers(), Headers({"Authorization": "Basic abc"}), bearer("not.a.jwt")):
        with pytest.raises(SignatureError):
            VONAGE.verify_request(HttpRequest("GET", V_URL, headers), SECRET, now=NOW, nonces=None)
    for token in (
        vonage_token(iat=None),
        vonage_token(iat="soon"),
        vonage_token(exp=int(NOW) - 100),
        vonage_token(payload_hash=5),
    ):
        with pytest.raises(SignatureError):
            VONAGE.verify_request(
                HttpRequest("GET", V_URL, bearer(token)), SECRET, now=NOW, nonces=None
            )
    rs = jwt.encode({"iat": int(NOW)}, SECRET, algorithm="HS512")
    with pytest.raises(SignatureError):
        VONAGE.verify_request(HttpRequest("GET", V_URL, bearer(rs)), SECRET, now=NOW, nonces=None)
    # No jti: nothing to remember, still valid.
    ok = vonage_token(jti=None, exp=int(NOW) + 60)
    assert (
        VONAGE.verify_request(
            HttpRequest("GET", V_URL, bearer(ok)), SECRET, now=NOW, nonces=MemoryNonceStore()
        )
        is None
    )


def test_vonage_get_payload_hash_forms() -> None:
    params = {"to": "447700900000", "from": "447700900001", "uuid": "u-1"}
    url = V_URL + "?" + urlencode(params)
    compact = b'{"to":"447700900000","from":"447700900001","uuid":"u-1"}'
    for hashed in (compact, urlencode(params).encode()):
        token = vonage_token(payload_hash=hashlib.sha256(hashed).hexdigest())
        VONAGE.verify_request(HttpRequest("GET", url, bearer(token)), SECRET, now=NOW, nonces=None)
    token = vonage_token(payload_hash=hashlib.sha256(b"").hexdigest())
    with pytest.raises(SignatureError, match="payload_hash"):
        VONAGE.verify_request(HttpRequest("GET", url, bearer(token)), SECRET, now=NOW, nonces=None)


def test_vonage_carrier_role_and_upgrade() -> None:
    params = {"to": "447700900000", "from": "447700900001", "uuid": "u-1"}
    req = VONAGE.sign_answer_request(V_URL, params, SECRET, now=NOW, nonce="j1")
    token = req.headers["Authorization"].removeprefix("Bearer ")
    assert vonage_jwt.verify_signature(token, SECRET)
    assert not vonage_jwt.verify_signature(token, SECRET + "x")
    assert VONAGE.verify_request(req, SECRET, now=NOW, nonces=None) == "j1"
    assert VONAGE.parse_answer(req).call_id == "u-1"
    up = VONAGE.sign_upgrade_request(
        "wss://gw.example.com/media/vonage/T", SECRET, now=NOW, nonce="j2"
    )
    assert VONAGE.verify_upgrade(up, SECRET, now=NOW + 5, nonces=None) == "j2"
    with pytest.raises(SignatureError, match="iat"):
        VONAGE.verify_upgrade(up, SECRET, now=NOW + 400, nonces=None)
    bare = VONAGE.sign_answer_request(V_URL, {}, SECRET, now=NOW, nonce="j3")
    assert bare.url == V_URL
