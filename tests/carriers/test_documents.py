"""Answer/refusal documents (checked against the SDKs' builders) and hang-up requests."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from plivo import plivoxml
from twilio.twiml.voice_response import Connect, Parameter, Stream, VoiceResponse

from gateway.carriers import HttpRequest, PlivoAdapter, VonageAdapter, get, public_url
from gateway.errors import CarrierProtocolError, UnknownCarrierError, ValidationError

MEDIA = "wss://gw.example.com/media/twilio/tok.EN-123"
NOW = 1_750_000_000.0


def canonical(xml: bytes | str) -> str:
    text = xml.decode() if isinstance(xml, bytes) else xml
    return ET.canonicalize(text.split("?>", 1)[-1] if text.startswith("<?xml") else text)


def test_twiml_answer_matches_sdk() -> None:
    params = {"tenant": "t1", "from": "+14155550100", "odd": "a&b<c>\"d'\n"}
    doc = get("twilio").answer_document(MEDIA, params)
    assert doc.content_type.startswith("text/xml")
    assert doc.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?><Response>')
    sdk = VoiceResponse()
    connect = Connect()
    stream = Stream(url=MEDIA)
    for name, value in params.items():
        stream.append(Parameter(name=name, value=value))
    connect.append(stream)
    sdk.append(connect)
    assert canonical(doc.body) == canonical(str(sdk))


def test_twiml_refusal_matches_sdk() -> None:
    for reason in ("busy", "rejected"):
        sdk = VoiceResponse()
        sdk.reject(reason=reason)
        assert canonical(get("twilio").refusal_document(reason).body) == canonical(str(sdk))


@pytest.mark.parametrize("carrier", ["twilio", "plivo", "vonage"])
@pytest.mark.parametrize(
    "url",
    [
        "https://gw.example.com/media/x",
        "wss://gw.example.com/media/x?token=1",
        "wss:///nohost",
        "wss://gw.example.com/" + "a" * 2100,
        "wss://gw.example.com/\x01",
    ],
)
def test_bad_media_urls(carrier: str, url: str) -> None:
    with pytest.raises(ValidationError, match="media_url"):
        get(carrier).answer_document(url, {})


def test_document_validation_errors() -> None:
    twilio = get("twilio")
    with pytest.raises(ValidationError, match="500"):
        twilio.answer_document(MEDIA, {"k": "v" * 499})
    twilio.answer_document(MEDIA, {"k": "v" * 497})
    with pytest.raises(ValidationError, match="XML"):
        twilio.answer_document(MEDIA, {"k": "\x00"})
    with pytest.raises(ValidationError, match="empty"):
        twilio.answer_document(MEDIA, {"": "v"})
    for carrier in ("twilio", "plivo", "vonage"):
        with pytest.raises(ValidationError, match="reason"):
            get(carrier).refusal_document("nope")
    with pytest.raises(ValidationError, match="A-Za-z0-9"):
        get("plivo").answer_document(MEDIA, {"from": "+1415"})
    with pytest.raises(ValidationError, match="512"):
        get("plivo").answer_document(MEDIA, {f"k{i}": "v" * 40 for i in range(12)})
    with pytest.raises(ValidationError, match="512"):
        get("vonage").answer_document(MEDIA, {"k": "v" * 510})
    with pytest.raises(ValidationError, match="content_type"):
        PlivoAdapter("audio/x-alaw;rate=8000")
    with pytest.raises(ValidationError, match="rate"):
        VonageAdapter(rate=44100)


def test_plivo_answer_matches_sdk() -> None:
    adapter = PlivoAdapter("audio/x-l16;rate=16000")
    doc = adapter.answer_document(MEDIA, {"tenant": "t1", "callRef": "abc123"})
    sdk = plivoxml.ResponseElement().add(
        plivoxml.StreamElement(
            MEDIA,
            bidirectional=True,
            keepCallAlive=True,
            contentType="audio/x-l16;rate=16000",
            extraHeaders="tenant=t1,callRef=abc123",
        )
    )
    assert canonical(doc.body) == canonical(sdk.to_string(False))
    bare = ET.fromstring(get("plivo").answer_document(MEDIA, {}).body)  # noqa: S314 - ours
    assert "extraHeaders" not in bare[0].attrib
    assert bare[0].get("contentType") == "audio/x-mulaw;rate=8000"


def test_plivo_refusal_matches_sdk() -> None:
    sdk = plivoxml.ResponseElement().add(plivoxml.HangupElement(reason="busy"))
    assert canonical(get("plivo").refusal_document().body) == canonical(sdk.to_string(False))


def test_vonage_ncco() -> None:
    doc = get("vonage").answer_document(MEDIA, {"call_uuid": "u1", "tenant": "t1"})
    assert doc.content_type == "application/json"
    assert json.loads(doc.body) == [
        {
            "action": "connect",
            "endpoint": [
                {
                    "type": "websocket",
                    "uri": MEDIA,
                    "content-type": "audio/l16;rate=16000",
                    "headers": {"call_uuid": "u1", "tenant": "t1"},
                    "authorization": {"type": "vonage"},
                }
            ],
        }
    ]
    unsigned = VonageAdapter(8000, sign_websocket=False).answer_document(MEDIA, {})
    assert "authorization" not in json.loads(unsigned.body)[0]["endpoint"][0]
    assert json.loads(get("vonage").refusal_document("rejected").body) == []


def test_parse_answers() -> None:
    twilio = get("twilio")
    req = twilio.sign_answer_request(
        "https://gw/inbound/twilio",
        {"CallSid": "CA1", "AccountSid": "AC1", "From": "+1", "To": "+2", "New": "x"},
        "tok",
        now=NOW,
        nonce="",
    )
    call = twilio.parse_answer(req)
    assert (call.call_id, call.account_id, call.from_number, call.to_number, call.direction) == (
        "CA1",
        "AC1",
        "+1",
        "+2",
        "inbound",
    )
    assert call.param("New") == "x"
    assert call.param("Nope") is None
    assert "CA1" not in repr(req)
    assert "tok" not in repr(req.headers)
    get_req = HttpRequest("GET", "https://gw/inbound/plivo?CallUUID=u&To=2&Direction=outbound")
    plivo_call = get("plivo").parse_answer(get_req)
    assert (plivo_call.call_id, plivo_call.account_id, plivo_call.direction) == (
        "u",
        None,
        "outbound",
    )
    vonage_call = get("vonage").parse_answer(
        HttpRequest(
            "POST",
            "https://gw/inbound/vonage",
            body=b'{"uuid":"u","to":"44","from_user":"bob","n":{"a":1}}',
        )
    )
    assert (vonage_call.from_number, vonage_call.param("n")) == ("bob", '{"a": 1}')
    with pytest.raises(CarrierProtocolError, match=r"CallSid, AccountSid$"):
        twilio.parse_answer(HttpRequest("POST", "https://gw/x", body=b"To=%2B2"))
    with pytest.raises(CarrierProtocolError, match="UTF-8"):
        twilio.parse_answer(HttpRequest("POST", "https://gw/x", body=b"\xff"))
    for body in (b"[1]", b"{", b"\xff"):
        with pytest.raises(CarrierProtocolError, match="JSON"):
            get("vonage").parse_answer(HttpRequest("POST", "https://gw/x", body=body))


def test_public_url_and_registry() -> None:
    assert (
        public_url("https://gw.example.com/", "/inbound/twilio?x=1")
        == "https://gw.example.com/inbound/twilio?x=1"
    )
    with pytest.raises(UnknownCarrierError, match="twilio, plivo, vonage"):
        get("telnyx")


def test_twilio_hangup() -> None:
    req = get("twilio").hangup_request("CA1", "AC1", "tok", now=NOW, base_url="http://127.0.0.1:9/")
    assert (req.method, req.url, req.body) == (
        "POST",
        "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Calls/CA1.json",
        b"Status=completed",
    )
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:tok").decode()
    assert "tok" not in repr(req)
    with pytest.raises(ValidationError, match="call_id"):
        get("twilio").hangup_request("", "AC1", "tok", now=NOW, base_url=None)


def test_plivo_hangup() -> None:
    req = get("plivo").hangup_request("u/1", "MA1", "tok", now=NOW, base_url=None)
    assert (req.method, req.url) == ("DELETE", "https://api.plivo.com/v1/Account/MA1/Call/u%2F1/")
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"MA1:tok").decode()


def test_vonage_hangup_with_application_jwt() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    req = get("vonage").hangup_request(
        "uuid-1", "app-1", pem, now=NOW, base_url="https://api-ap-3.vonage.com"
    )
    assert (req.method, req.url, req.body) == (
        "PUT",
        "https://api-ap-3.vonage.com/v1/calls/uuid-1",
        b'{"action":"hangup"}',
    )
    token = req.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["application_id"] == "app-1"
    assert claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + 900
    with pytest.raises(ValidationError, match="private_key"):
        get("vonage").hangup_request("uuid-1", "app-1", "not a key", now=NOW, base_url=None)
