"""The values and interfaces every carrier adapter shares.

An adapter is stateless and owns one carrier's whole wire protocol, with no I/O:

* HTTP side: answer request -> :class:`InboundCall`, signature checks, answer and
  refusal documents, and the REST hang-up as a :class:`HangupRequest` for the edge to send.
* Media side: :meth:`CarrierAdapter.open_stream` returns a per-socket
  :class:`MediaStream` in the gateway's role (messages in -> events; commands -> messages).
* Carrier side: :meth:`CarrierAdapter.sign_answer_request` and
  :meth:`CarrierAdapter.simulate_carrier` play the carrier, for tests and the load tester.

Time is always passed in (``now``, Unix seconds); nothing here reads a clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import parse_qsl, urlsplit

from gateway.carriers.events import AudioReceived, Command, Event, PlayAudio
from gateway.carriers.signing import NonceStore
from gateway.errors import CarrierProtocolError, CloseCode, CommandError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "CarrierAdapter",
    "CarrierSide",
    "Document",
    "HangupRequest",
    "Headers",
    "HttpRequest",
    "InboundCall",
    "MediaStream",
    "WireMessage",
    "public_url",
]

DEFAULT_MAX_MESSAGE_BYTES = 65_536
"""Largest media-socket message accepted, in bytes (reliability.md section 5.3: 64 KiB)."""

WireMessage = str | bytes
"""A WebSocket message: ``str`` is a text frame, ``bytes`` a binary frame."""


class Headers(Mapping[str, str]):
    """Read-only HTTP headers with case-insensitive names (the last value of a repeat wins)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = {name.lower(): value for name, value in pairs}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        # Values may be signatures or credentials: names only.
        return f"Headers({sorted(self._items)!r})"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP request as the carrier made it (or as we make it in the carrier's role).

    ``url`` must be the *externally visible* URL the carrier requested, built with
    :func:`public_url` from the configured public base URL, because that is what the
    carrier signed; the socket's Host or X-Forwarded-* headers are not trusted for it.
    """

    method: str
    url: str
    headers: Headers = field(default_factory=Headers, repr=False)
    body: bytes = field(default=b"", repr=False)

    @property
    def query(self) -> list[tuple[str, str]]:
        """The URL's query parameters, in order, blanks kept."""
        return parse_qsl(urlsplit(self.url).query, keep_blank_values=True)


def public_url(base_url: str, path_and_query: str) -> str:
    """Join the configured public base (``https://gw.example.com``) and a request target.

    Args:
        base_url: scheme and authority as the carrier sees us, e.g. from settings.
        path_and_query: the request target as received (``/inbound/twilio?x=1``).
    """
    return base_url.rstrip("/") + "/" + path_and_query.lstrip("/")


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A carrier's answer request, parsed."""

    carrier: str
    call_id: str
    """Twilio ``CallSid``, Plivo ``CallUUID``, Vonage ``uuid``."""
    account_id: str | None
    """Twilio ``AccountSid``; Plivo and Vonage do not send one on the answer request."""
    from_number: str
    to_number: str
    direction: str
    params: tuple[tuple[str, str], ...] = field(repr=False)
    """Every field as received, in order, unknown ones included (they are signed too)."""

    def param(self, name: str) -> str | None:
        """The first value of a received field, or None."""
        return next((value for key, value in self.params if key == name), None)


@dataclass(frozen=True, slots=True)
class Document:
    """A call-control document to send back as the HTTP response body."""

    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class HangupRequest:
    """The carrier REST request that ends a call, for the edge to send."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)  # carries the credential
    body: bytes = field(default=b"", repr=False)


class MediaStream(ABC):
    """One media socket in the gateway's role: wire messages in, events out.

    Args:
        max_message_bytes: messages longer than this raise ``MESSAGE_TOO_BIG``
            (for text, the length in characters is used).
    """

    carrier = ""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes

    @abstractmethod
    def receive(self, message: WireMessage) -> list[Event]:
        """Parse one message from the carrier.

        Raises:
            CarrierProtocolError: the message is malformed or out of order; its
                ``close_code`` says how the edge should close the socket.
        """

    def receive_media(self, message: WireMessage) -> bytes | list[Event]:
        """The per-frame path: :meth:`receive` without building an event for audio.

        Returns the caller audio payload (bytes, in :attr:`AudioReceived.audio_format`)
        when ``message`` is one audio message of the started stream, checked exactly as
        :meth:`receive` checks it; otherwise the events :meth:`receive` returns. Adapters
        override it so that the 50 audio messages a second build no event and no list.

        Raises:
            CarrierProtocolError: as :meth:`receive` does.
        """
        events = self.receive(message)
        if len(events) == 1 and type(event := events[0]) is AudioReceived:
            return event.payload
        return events

    @abstractmethod
    def send(self, command: Command) -> list[WireMessage]:
        """Turn a command into the wire messages to send, in order."""

    def audio_message(self, frame: bytes) -> WireMessage:
        """The one wire message that plays ``frame`` (the paced writer's 20 ms frame).

        The per-frame path: the same message as ``send(PlayAudio(frame))``. Adapters
        override it to skip building the command and the list for an exact frame.

        Raises:
            CommandError: as :meth:`send` does, or the audio needs more than one message.
        """
        messages = self.send(PlayAudio(frame))
        if len(messages) != 1:
            raise CommandError("this audio takes several messages: send(PlayAudio) it")
        return messages[0]

    @abstractmethod
    def connection_closed(self) -> list[Event]:
        """The socket closed: a :class:`StreamStopped` unless the stream already stopped."""

    def fail(self, message: str, close_code: CloseCode = CloseCode.PROTOCOL_ERROR) -> NoReturn:
        """Raise :class:`CarrierProtocolError` for this carrier."""
        raise CarrierProtocolError(self.carrier, message, close_code)

    def check_size(self, message: WireMessage) -> None:
        """Reject a message longer than :attr:`max_message_bytes`."""
        if len(message) > self.max_message_bytes:
            self.fail(
                f"message of {len(message)} bytes exceeds the {self.max_message_bytes}-byte limit",
                CloseCode.MESSAGE_TOO_BIG,
            )


class CarrierSide(ABC):
    """One media socket in the *carrier's* role (tests, load tester).

    It produces what the carrier sends and reacts to our commands the way the carrier
    does, including its playback buffer: :meth:`advance` plays queued audio in time.
    """

    @abstractmethod
    def open(self) -> list[WireMessage]:
        """The messages the carrier sends first (connected / start)."""

    @abstractmethod
    def audio(self, payload: bytes) -> WireMessage:
        """A caller-audio message carrying ``payload`` (one 20 ms frame)."""

    @abstractmethod
    def dtmf(self, digit: str) -> WireMessage:
        """A key-press message."""

    @abstractmethod
    def stop(self) -> list[WireMessage]:
        """What the carrier sends when the call ends (may be nothing: the socket closes)."""

    @abstractmethod
    def receive(self, message: WireMessage) -> list[WireMessage]:
        """React to one message from the gateway; returns immediate replies."""

    @abstractmethod
    def advance(self, ms: int) -> list[WireMessage]:
        """Play ``ms`` milliseconds of queued audio; returns acks for marks reached."""

    @abstractmethod
    def take_played(self) -> bytes:
        """Audio played to the 'caller' since the last call (for checks and metrics)."""


class CarrierAdapter(ABC):
    """One carrier's HTTP and media protocols (stateless; see the module docstring)."""

    name = ""

    @abstractmethod
    def parse_answer(self, request: HttpRequest) -> InboundCall:
        """Parse the answer request; unknown fields are kept in ``params``."""

    @abstractmethod
    def verify_request(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """Check the carrier's signature on a webhook with the tenant's credential.

        Args:
            request: the request, with its public URL.
            credential: Twilio auth token, Plivo auth token, Vonage signature secret.
            now: current Unix time in seconds (for timestamp and replay checks).
            nonces: where nonces are remembered; None leaves the replay check to the
                caller, which must then record the returned key itself.

        Returns:
            The replay key (nonce / jti) the request carried, if any.

        Raises:
            SignatureError: the request is not signed with that credential, is stale
                or is a replay.
        """

    @abstractmethod
    def verify_upgrade(
        self, request: HttpRequest, credential: str, *, now: float, nonces: NonceStore | None
    ) -> str | None:
        """Like :meth:`verify_request`, for the media WebSocket upgrade (a GET)."""

    @abstractmethod
    def answer_document(self, media_url: str, parameters: Mapping[str, str]) -> Document:
        """The document that opens a bidirectional stream to ``media_url``.

        Args:
            media_url: ``wss://.../media/<carrier>/<call-token>``; the token is in the path
                because Twilio drops query strings.
            parameters: small string metadata delivered back in :class:`StreamStarted`.
        """

    @abstractmethod
    def refusal_document(self, reason: str = "busy") -> Document:
        """The document that refuses the call (``busy`` or ``rejected``)."""

    @abstractmethod
    def hangup_request(
        self, call_id: str, account_id: str, secret: str, *, now: float, base_url: str | None
    ) -> HangupRequest:
        """The REST request that ends ``call_id`` (credentials as each carrier needs)."""

    @abstractmethod
    def open_stream(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> MediaStream:
        """A new media stream parser in the gateway's role."""

    @abstractmethod
    def sign_answer_request(
        self, url: str, params: Mapping[str, str], credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """Build and sign the answer request exactly as the carrier sends it."""

    @abstractmethod
    def sign_upgrade_request(
        self, url: str, credential: str, *, now: float, nonce: str
    ) -> HttpRequest:
        """Build and sign the media WebSocket upgrade as the carrier sends it."""

    @abstractmethod
    def simulate_carrier(
        self, call_id: str, custom_parameters: Mapping[str, str], *, rate: int = 8000
    ) -> CarrierSide:
        """A carrier-role media socket for ``call_id``."""
