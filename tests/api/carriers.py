"""Local stand-ins for the carriers' REST APIs, answering the documented shapes.

Each checks the auth its carrier uses (HTTP Basic: Twilio ``AccountSid:AuthToken``,
Plivo ``auth_id:auth_token``, Vonage ``api_key:api_secret``) and answers 401 with the
carrier's error body otherwise. Shapes, from the carriers' API references:

* Twilio ``GET /2010-04-01/Accounts/{Sid}.json`` -> ``{sid, friendly_name, status, ...}``;
  ``GET .../IncomingPhoneNumbers.json`` -> ``{incoming_phone_numbers: [{sid,
  phone_number, status, ...}], next_page_uri, ...}`` (one number per page here, so the
  client must follow ``next_page_uri``).
* Plivo ``GET /v1/Account/{auth_id}/`` -> ``{auth_id, name, account_type, ...}``;
  ``GET /v1/Account/{auth_id}/Number/`` -> ``{api_id, meta: {next, ...}, objects:
  [{number (no +), active, ...}]}``.
* Vonage ``GET /account/get-balance`` -> ``{value, autoReload}``;
  ``GET /account/numbers`` -> ``{count, numbers: [{country, msisdn, type, features}]}``.
* Outbound calls, recorded in :attr:`StandIns.dials`: Twilio
  ``POST /2010-04-01/Accounts/{Sid}/Calls.json`` (form) -> 201 ``{sid, status: "queued",
  to, from, ...}``; Plivo ``POST /v1/Account/{auth_id}/Call/`` (JSON) -> 201
  ``{api_id, message: "call fired", request_uuid}``.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-0001"
PLIVO_ID = "MAPLIVOAUTHID0000001"
PLIVO_TOKEN = "plivo-auth-token-0001"
VONAGE_KEY = "abcd1234"
VONAGE_SECRET = "vonage-secret-0001"

TWILIO_NUMBERS = ["+14155550101", "+14155550102"]
PLIVO_NUMBERS = ["+14155550201"]
VONAGE_NUMBERS = ["+447700900001"]


@dataclass
class StandIns:
    """The stand-in servers' state: request counts and a switch to fail."""

    hits: Counter[str] = field(default_factory=Counter)
    failing: bool = False
    """When set, every carrier endpoint answers 503 (an outage)."""
    dials: list[Dialed] = field(default_factory=list)
    """Every call-create request that passed the auth check, in order."""
    cancels: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    """Every cancel request: carrier, the call's id, form fields (Twilio)."""


@dataclass(frozen=True)
class Dialed:
    """One call-create request as the carrier received it, and what it answered."""

    carrier: str
    path: str
    content_type: str
    fields: dict[str, Any]
    """The form fields (Twilio) or the JSON body (Plivo)."""
    call_id: str
    """The id the stand-in answered: Twilio ``sid``, Plivo ``request_uuid``."""


def _basic(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Basic":
        return None
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password


def make_carriers_app(state: StandIns) -> web.Application:
    """One aiohttp app answering for all three carriers (distinct paths)."""

    def gate(carrier: str, request: web.Request, user: str, password: str) -> None:
        state.hits[carrier] += 1
        if state.failing:
            raise web.HTTPServiceUnavailable()
        if _basic(request) != (user, password):
            bodies = {
                "twilio": '{"code": 20003, "message": "Authenticate", "status": 401}',
                "plivo": '{"api_id": "x", "error": "Authentication failed"}',
                "vonage": '{"error-code": "401", "error-code-label": "authentication failed"}',
            }
            raise web.HTTPUnauthorized(text=bodies[carrier], content_type="application/json")

    async def twilio_account(request: web.Request) -> web.Response:
        gate("twilio", request, request.match_info["sid"], TWILIO_TOKEN)
        sid = request.match_info["sid"]
        return web.json_response({"sid": sid, "friendly_name": "Acme Twilio", "status": "active"})

    async def twilio_numbers(request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        gate("twilio", request, sid, TWILIO_TOKEN)
        page = int(request.query.get("Page", "0"))
        number = TWILIO_NUMBERS[page]
        last = page + 1 >= len(TWILIO_NUMBERS)
        next_uri = (
            None
            if last
            else f"/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json?Page={page + 1}&PageSize=1"
        )
        item = {"sid": f"PN{page:032d}", "phone_number": number, "status": "in-use"}
        return web.json_response(
            {"incoming_phone_numbers": [item], "next_page_uri": next_uri, "page": page}
        )

    async def plivo_account(request: web.Request) -> web.Response:
        gate("plivo", request, request.match_info["auth_id"], PLIVO_TOKEN)
        return web.json_response(
            {
                "auth_id": request.match_info["auth_id"],
                "name": "Acme Plivo",
                "account_type": "standard",
            }
        )

    async def plivo_numbers(request: web.Request) -> web.Response:
        gate("plivo", request, request.match_info["auth_id"], PLIVO_TOKEN)
        objects = [
            {"number": n.lstrip("+"), "active": True, "number_type": "local"} for n in PLIVO_NUMBERS
        ]
        meta = {"limit": 20, "next": None, "offset": 0, "total_count": len(objects)}
        return web.json_response({"api_id": "x", "meta": meta, "objects": objects})

    async def vonage_balance(request: web.Request) -> web.Response:
        gate("vonage", request, VONAGE_KEY, VONAGE_SECRET)
        return web.json_response({"value": 10.28, "autoReload": False})

    async def vonage_numbers(request: web.Request) -> web.Response:
        gate("vonage", request, VONAGE_KEY, VONAGE_SECRET)
        numbers = [
            {"country": "GB", "msisdn": n.lstrip("+"), "type": "mobile-lvn", "features": ["VOICE"]}
            for n in VONAGE_NUMBERS
        ]
        return web.json_response({"count": len(numbers), "numbers": numbers})

    async def twilio_dial(request: web.Request) -> web.Response:
        gate("twilio", request, request.match_info["sid"], TWILIO_TOKEN)
        form = {key: str(value) for key, value in (await request.post()).items()}
        sid = "CA" + secrets.token_hex(16)
        state.dials.append(Dialed("twilio", request.path, request.content_type, form, sid))
        body = {"sid": sid, "status": "queued", "to": form.get("To"), "from": form.get("From")}
        return web.json_response(body, status=201)

    async def plivo_dial(request: web.Request) -> web.Response:
        gate("plivo", request, request.match_info["auth_id"], PLIVO_TOKEN)
        payload = await request.json()
        request_uuid = str(uuid.uuid4())
        state.dials.append(
            Dialed("plivo", request.path, request.content_type, payload, request_uuid)
        )
        body = {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": request_uuid}
        return web.json_response(body, status=201)

    async def twilio_update(request: web.Request) -> web.Response:
        gate("twilio", request, request.match_info["sid"], TWILIO_TOKEN)
        form = {key: str(value) for key, value in (await request.post()).items()}
        state.cancels.append(("twilio", request.match_info["call_sid"], form))
        return web.json_response({"sid": request.match_info["call_sid"], "status": "canceled"})

    async def plivo_cancel(request: web.Request) -> web.Response:
        gate("plivo", request, request.match_info["auth_id"], PLIVO_TOKEN)
        state.cancels.append(("plivo", request.match_info["request_uuid"], {}))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Calls/{call_sid}.json", twilio_update)
    app.router.add_delete("/v1/Account/{auth_id}/Request/{request_uuid}/", plivo_cancel)
    app.router.add_post("/2010-04-01/Accounts/{sid}/Calls.json", twilio_dial)
    app.router.add_post("/v1/Account/{auth_id}/Call/", plivo_dial)
    app.router.add_get("/2010-04-01/Accounts/{sid}.json", twilio_account)
    app.router.add_get("/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json", twilio_numbers)
    app.router.add_get("/v1/Account/{auth_id}/", plivo_account)
    app.router.add_get("/v1/Account/{auth_id}/Number/", plivo_numbers)
    app.router.add_get("/account/get-balance", vonage_balance)
    app.router.add_get("/account/numbers", vonage_numbers)
    return app
