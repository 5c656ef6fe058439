"""``/v1/numbers``: BYOC number registrations (docs.rymi.live/api/numbers.html, BYOC version).

Rymi does not buy or release numbers: a tenant registers numbers it already owns at its
carrier and attaches them to agents. A number belongs to at most one tenant; a second
tenant registering it gets 409, and every other operation on a number the caller does
not own is a 404, exactly as if it did not exist.

The number in a path is accepted raw (``/numbers/+14155550100/attach``, what the
Python SDK sends) or URL-encoded (``%2B14155550100``, what the Node SDK sends); aiohttp
decodes the path before matching, so both arrive as ``+14155550100``. Digits only
(the older docs' ``14155550100``) get the ``+`` back.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.http import DIRECTORY, TENANT, iso_ms, json_response, read_json, read_query
from gateway.api.routes import Route
from gateway.api.schemas import (
    AttachNumber,
    NumberAssignment,
    NumberList,
    NumberOut,
    NumberStatus,
    PageQuery,
    RegisterNumber,
)
from gateway.store.models import Number, validate_e164

__all__ = ["ROUTES"]


def number_out(number: Number, provider: str | None) -> NumberOut:
    """The API shape of a registered number."""
    return NumberOut(
        id=number.number,
        number=number.number,
        phone_number=number.number,
        provider=provider,  # type: ignore[arg-type]  # tenants.active_carrier is checked
        agent_id=number.agent_id,
        assigned_agent_id=number.agent_id,
        created_at=iso_ms(number.created_at_ms) or "",
    )


def path_number(request: web.Request) -> str:
    """The E.164 number in the path. Raises ValidationError (400) when it is not one."""
    raw = request.match_info["number"].strip()
    if raw.isdigit():
        raw = "+" + raw
    return validate_e164(raw)


async def register_number(request: web.Request) -> web.Response:
    """Register a number (201), or re-register one the tenant has (200, agent updated)."""
    body = await read_json(request, RegisterNumber)
    number, created = await request.app[DIRECTORY].add_number(
        request[TENANT], body.number, body.agent_id
    )
    result = NumberAssignment("registered", number.number, number.agent_id)
    return json_response(result, status=201 if created else 200)


async def list_numbers(request: web.Request) -> web.Response:
    """The tenant's registered numbers, a page at a time."""
    page = read_query(request, PageQuery)
    directory = request.app[DIRECTORY]
    tenant = await directory.get_tenant(request[TENANT])
    numbers = await directory.list_numbers(tenant.id)
    chosen = numbers[page.offset : page.offset + page.limit]
    items = [number_out(n, tenant.active_carrier) for n in chosen]
    return json_response(NumberList(items, len(numbers), page.offset, page.limit))


async def attach_number(request: web.Request) -> web.Response:
    """Route the number's inbound calls to one of the tenant's agents."""
    body = await read_json(request, AttachNumber)
    number = path_number(request)
    attached = await request.app[DIRECTORY].attach_number(request[TENANT], number, body.agent_id)
    return json_response(NumberAssignment("attached", attached.number, attached.agent_id))


async def detach_number(request: web.Request) -> web.Response:
    """Take the number off its agent (its calls are then refused)."""
    number = path_number(request)
    await request.app[DIRECTORY].attach_number(request[TENANT], number, None)
    return json_response(NumberStatus("detached", number))


async def remove_number(request: web.Request) -> web.Response:
    """Remove the registration (the number stays the tenant's at its carrier)."""
    number = path_number(request)
    await request.app[DIRECTORY].remove_number(request[TENANT], number)
    return json_response(NumberStatus("removed", number))


ROUTES = [
    Route(
        "POST",
        "/numbers",
        register_number,
        "Register a number you own at your carrier",
        "numbers",
        body=RegisterNumber,
        responses={201: NumberAssignment, 200: NumberAssignment},
        errors=(404, 409),
    ),
    Route(
        "GET",
        "/numbers",
        list_numbers,
        "List registered numbers",
        "numbers",
        query=PageQuery,
        responses={200: NumberList},
    ),
    Route(
        "POST",
        "/numbers/{number}/attach",
        attach_number,
        "Attach a number to an agent",
        "numbers",
        body=AttachNumber,
        responses={200: NumberAssignment},
    ),
    Route(
        "POST",
        "/numbers/{number}/detach",
        detach_number,
        "Detach a number from its agent",
        "numbers",
        responses={200: NumberStatus},
    ),
    Route(
        "DELETE",
        "/numbers/{number}",
        remove_number,
        "Remove a number's registration",
        "numbers",
        responses={200: NumberStatus},
    ),
]
