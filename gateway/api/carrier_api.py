"""The carriers' REST APIs, as far as the API needs them: check credentials, list
numbers, place outbound calls.

One method pair per carrier, each a single documented call:

* Twilio: ``GET /2010-04-01/Accounts/{AccountSid}.json`` (the account's
  ``friendly_name``) and ``GET .../IncomingPhoneNumbers.json`` (paged by
  ``next_page_uri``), HTTP Basic ``AccountSid:AuthToken``
  (twilio.com/docs/usage/api/account, /phone-numbers/api/incomingphonenumber-resource).
* Plivo: ``GET /v1/Account/{auth_id}/`` (``name``) and ``GET /v1/Account/{auth_id}/Number/``
  (paged by ``meta.next``), HTTP Basic ``auth_id:auth_token``
  (plivo.com/docs/account/api/account, /numbers/api/phone-number).
* Vonage: ``GET /account/get-balance`` and ``GET /account/numbers`` (paged by
  ``index``/``size``) on rest.nexmo.com, HTTP Basic ``api_key:api_secret``
  (developer.vonage.com/en/api/account, /api/numbers). Vonage reports no account name,
  so the API key stands in for it.

Outbound calls (:meth:`CarrierApi.dial`):

* Twilio ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``, form fields ``To``,
  ``From``, ``Url`` (our answer URL), ``Method=POST``, ``Timeout`` (seconds of ringing);
  201 with the call's ``sid`` (twilio.com/docs/voice/api/call-resource#create-a-call-resource).
* Plivo ``POST /v1/Account/{auth_id}/Call/``, JSON ``from``, ``to`` (digits, no ``+``),
  ``answer_url``, ``answer_method=POST``, ``ring_timeout``; 201 with ``request_uuid``
  (plivo.com/docs/voice/api/call/make-a-call). Plivo's answer request carries it back as
  ``RequestUUID``, beside the call's own ``CallUUID``.
* Cancelling a call still ringing (:meth:`CarrierApi.cancel`): Twilio ``POST
  .../Calls/{CallSid}.json`` with ``Status=canceled``; Plivo ``DELETE
  /v1/Account/{auth_id}/Request/{request_uuid}/`` (plivo.com/docs/voice/api/request).
* Vonage: ``POST /v1/calls`` on api.nexmo.com authenticates with an *application* JWT
  signed by the application's private key (developer.vonage.com/en/api/voice#createCall),
  which the tenant's connection (api key and secret) does not include; not supported.

A 401 or 403 from the carrier means the credentials are wrong
(:class:`~gateway.errors.CarrierApiError` with ``rejected=True``); anything else that
goes wrong (unreachable, 5xx, a body that is not the documented shape) is
``rejected=False``. Neither message carries credentials or the carrier's body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.errors import CarrierApiError
from gateway.store.models import (
    CarrierCredentials,
    PlivoCredentials,
    TwilioCredentials,
    VonageCredentials,
)

__all__ = ["CarrierAccountInfo", "CarrierApi", "CarrierApiUrls", "CarrierNumber", "Dial"]

_MAX_PAGES = 20  # numbers are synced on request; a bound keeps one request bounded
_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True, slots=True)
class CarrierApiUrls:
    """Base URLs of the carriers' REST APIs (tests point them at local stand-ins)."""

    twilio: str = "https://api.twilio.com"
    plivo: str = "https://api.plivo.com"
    vonage: str = "https://rest.nexmo.com"


@dataclass(frozen=True, slots=True)
class CarrierAccountInfo:
    """What the carrier says about the account the credentials open."""

    name: str | None
    country: str | None


@dataclass(frozen=True, slots=True)
class CarrierNumber:
    """A number on the carrier account."""

    id: str
    """The carrier's id for it (Twilio PN sid, else the number)."""
    phone_number: str
    """E.164."""
    status: str


@dataclass(frozen=True, slots=True)
class Dial:
    """An outbound call to place."""

    to_number: str
    """E.164 callee."""
    from_number: str
    """E.164 caller ID (one of the tenant's numbers)."""
    answer_url: str
    """Our answer URL for this call; the carrier requests it when the callee answers."""
    ring_timeout_s: int
    """Seconds the carrier lets it ring before giving up."""


class CarrierApi:
    """Client of the carriers' REST APIs over one aiohttp session.

    Args:
        session: the client session (owned by the caller, closed by it).
        urls: base URLs.
    """

    def __init__(self, session: aiohttp.ClientSession, urls: CarrierApiUrls | None = None) -> None:
        self.session = session
        self.urls = urls or CarrierApiUrls()

    async def account(self, credentials: CarrierCredentials) -> CarrierAccountInfo:
        """Check the credentials by fetching the account. Raises CarrierApiError."""
        if isinstance(credentials, TwilioCredentials):
            sid = credentials.account_id
            body = await self._get(
                credentials, f"{self.urls.twilio}/2010-04-01/Accounts/{sid}.json"
            )
            return CarrierAccountInfo(_text(body, "friendly_name", "twilio"), None)
        if isinstance(credentials, PlivoCredentials):
            url = f"{self.urls.plivo}/v1/Account/{quote(credentials.account_id)}/"
            body = await self._get(credentials, url)
            return CarrierAccountInfo(_text(body, "name", "plivo"), None)
        vonage = _vonage(credentials)
        body = await self._get(vonage, f"{self.urls.vonage}/account/get-balance")
        if not isinstance(body.get("value"), int | float):
            raise CarrierApiError("vonage", "get-balance answered without a value", rejected=False)
        return CarrierAccountInfo(f"Vonage {vonage.account_id}", None)

    async def numbers(self, credentials: CarrierCredentials) -> list[CarrierNumber]:
        """Every number on the account (bounded by a page limit). Raises CarrierApiError."""
        return [number async for number in self._numbers(credentials)]

    async def _numbers(self, credentials: CarrierCredentials) -> AsyncIterator[CarrierNumber]:
        if isinstance(credentials, TwilioCredentials):
            base = self.urls.twilio
            url: str | None = (
                f"{base}/2010-04-01/Accounts/{credentials.account_id}/IncomingPhoneNumbers.json"
            )
            for _ in range(_MAX_PAGES):
                if url is None:
                    return
                body = await self._get(credentials, url)
                for item in _list(body, "incoming_phone_numbers", "twilio"):
                    yield CarrierNumber(
                        str(item.get("sid")),
                        str(item.get("phone_number")),
                        str(item.get("status") or "in-use"),
                    )
                next_uri = body.get("next_page_uri")
                url = f"{base}{next_uri}" if isinstance(next_uri, str) and next_uri else None
        elif isinstance(credentials, PlivoCredentials):
            base = self.urls.plivo
            url = f"{base}/v1/Account/{quote(credentials.account_id)}/Number/"
            for _ in range(_MAX_PAGES):
                if url is None:
                    return
                body = await self._get(credentials, url)
                for item in _list(body, "objects", "plivo"):
                    number = _plus(str(item.get("number")))
                    status = "active" if item.get("active", True) else "inactive"
                    yield CarrierNumber(number, number, status)
                meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
                next_uri = meta.get("next") if isinstance(meta, dict) else None
                url = f"{base}{next_uri}" if isinstance(next_uri, str) and next_uri else None
        else:
            vonage = _vonage(credentials)
            for index in range(1, _MAX_PAGES + 1):
                url = f"{self.urls.vonage}/account/numbers?size=100&index={index}"
                body = await self._get(vonage, url)
                items = _list(body, "numbers", "vonage")
                for item in items:
                    number = _plus(str(item.get("msisdn")))
                    yield CarrierNumber(number, number, "active")
                count = body.get("count")
                if len(items) < 100 or not isinstance(count, int) or index * 100 >= count:
                    return

    async def dial(self, credentials: CarrierCredentials, dial: Dial) -> str:
        """Ask the carrier to place ``dial``; returns the carrier's id for the request
        (Twilio call ``sid``, Plivo ``request_uuid``). Raises CarrierApiError."""
        if isinstance(credentials, TwilioCredentials):
            url = f"{self.urls.twilio}/2010-04-01/Accounts/{credentials.account_id}/Calls.json"
            form = {
                "To": dial.to_number,
                "From": dial.from_number,
                "Url": dial.answer_url,
                "Method": "POST",
                "Timeout": str(dial.ring_timeout_s),
            }
            body = await self._send(credentials, "POST", url, data=form, ok=(200, 201))
            return _id(body, "sid", "twilio")
        if isinstance(credentials, PlivoCredentials):
            url = f"{self.urls.plivo}/v1/Account/{quote(credentials.account_id)}/Call/"
            payload = {
                "from": dial.from_number.lstrip("+"),
                "to": dial.to_number.lstrip("+"),
                "answer_url": dial.answer_url,
                "answer_method": "POST",
                "ring_timeout": dial.ring_timeout_s,
            }
            body = await self._send(credentials, "POST", url, json=payload, ok=(200, 201))
            return _id(body, "request_uuid", "plivo")
        raise CarrierApiError(
            credentials.carrier, "outbound calls are not supported for this carrier", rejected=False
        )

    async def cancel(self, credentials: CarrierCredentials, carrier_call_id: str) -> None:
        """Stop a call the carrier is still dialing (the id :meth:`dial` returned)."""
        if isinstance(credentials, TwilioCredentials):
            base = f"{self.urls.twilio}/2010-04-01/Accounts/{credentials.account_id}"
            url = f"{base}/Calls/{quote(carrier_call_id)}.json"
            await self._send(credentials, "POST", url, data={"Status": "canceled"}, raw=True)
        elif isinstance(credentials, PlivoCredentials):
            base = f"{self.urls.plivo}/v1/Account/{quote(credentials.account_id)}"
            url = f"{base}/Request/{quote(carrier_call_id)}/"
            await self._send(credentials, "DELETE", url, ok=(200, 204), raw=True)
        else:
            raise CarrierApiError(credentials.carrier, "unsupported carrier", rejected=False)

    async def _get(self, credentials: CarrierCredentials, url: str) -> dict[str, Any]:
        return await self._send(credentials, "GET", url)

    async def _send(
        self,
        credentials: CarrierCredentials,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200,),
        raw: bool = False,
        **payload: Any,
    ) -> dict[str, Any]:
        """One request; the JSON object it answered (``raw``: ``{}``, body unread)."""
        carrier = credentials.carrier
        secret = credentials.secret_fields()
        password = secret.get("auth_token") or secret["api_secret"]
        headers = {"Authorization": aiohttp.encode_basic_auth(credentials.account_id, password)}
        try:
            async with self.session.request(
                method, url, headers=headers, timeout=_TIMEOUT, **payload
            ) as response:
                if response.status in (401, 403):
                    raise CarrierApiError(carrier, "the credentials were rejected", rejected=True)
                if response.status not in ok:
                    raise CarrierApiError(
                        carrier, f"API answered HTTP {response.status}", rejected=False
                    )
                body = {} if raw else await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise CarrierApiError(
                carrier, f"API unreachable ({type(exc).__name__})", rejected=False
            ) from None
        if not isinstance(body, dict):
            raise CarrierApiError(carrier, "API answered a non-object body", rejected=False)
        return body


def _id(body: dict[str, Any], key: str, carrier: str) -> str:
    value = body.get(key)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # Plivo's request_uuid is a list when several numbers are dialed
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise CarrierApiError(carrier, f"call create answered without a {key}", rejected=False)
    return value


def _vonage(credentials: CarrierCredentials) -> VonageCredentials:
    if not isinstance(credentials, VonageCredentials):
        raise CarrierApiError(credentials.carrier, "unsupported carrier", rejected=False)
    return credentials


def _text(body: dict[str, Any], key: str, carrier: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise CarrierApiError(carrier, f"account answered a non-text {key}", rejected=False)
    return value


def _list(body: dict[str, Any], key: str, carrier: str) -> list[dict[str, Any]]:
    items = body.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CarrierApiError(carrier, f"numbers answered a malformed {key}", rejected=False)
    return items


def _plus(number: str) -> str:
    # Plivo and Vonage give numbers without the "+" (Plivo "14155550100", Vonage msisdn).
    return number if number.startswith("+") else f"+{number}"
