"""Sans-I/O carrier adapters: one per carrier, no I/O, no clock (see docs/carriers.md).

``get("twilio")`` returns the adapter; each adapter parses the answer request, checks
signatures, writes the answer/refusal documents, builds the REST hang-up, opens media
stream parsers (gateway role) and plays the carrier (carrier role, for tests and the
load tester). Telnyx is not implemented: see docs/carriers.md for why.
"""

from __future__ import annotations

from gateway.carriers.base import (
    CarrierAdapter,
    CarrierSide,
    Document,
    HangupRequest,
    Headers,
    HttpRequest,
    InboundCall,
    MediaStream,
    WireMessage,
    public_url,
)
from gateway.carriers.events import (
    AudioReceived,
    ClearPlayback,
    Command,
    DtmfReceived,
    Event,
    Mark,
    MarkPlayed,
    PlayAudio,
    PlaybackCleared,
    SendDtmf,
    StreamStarted,
    StreamStopped,
)
from gateway.carriers.plivo import PlivoAdapter
from gateway.carriers.signing import MemoryNonceStore, NonceStore
from gateway.carriers.twilio import TwilioAdapter
from gateway.carriers.vonage import VonageAdapter
from gateway.errors import UnknownCarrierError

__all__ = [
    "NAMES",
    "AudioReceived",
    "CarrierAdapter",
    "CarrierSide",
    "ClearPlayback",
    "Command",
    "Document",
    "DtmfReceived",
    "Event",
    "HangupRequest",
    "Headers",
    "HttpRequest",
    "InboundCall",
    "Mark",
    "MarkPlayed",
    "MediaStream",
    "MemoryNonceStore",
    "NonceStore",
    "PlayAudio",
    "PlaybackCleared",
    "PlivoAdapter",
    "SendDtmf",
    "StreamStarted",
    "StreamStopped",
    "TwilioAdapter",
    "VonageAdapter",
    "WireMessage",
    "get",
    "public_url",
]

_REGISTRY: dict[str, CarrierAdapter] = {
    "twilio": TwilioAdapter(),
    "plivo": PlivoAdapter(),
    "vonage": VonageAdapter(),
}

NAMES = tuple(_REGISTRY)
"""The carrier names the gateway serves (``/inbound/<name>``, ``/media/<name>/...``)."""


def get(name: str) -> CarrierAdapter:
    """The adapter registered as ``name`` (default settings).

    Raises:
        UnknownCarrierError: no adapter has that name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownCarrierError(
            f"unknown carrier {name[:40]!r}; expected one of {', '.join(NAMES)}"
        ) from None
