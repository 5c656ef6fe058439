"""The API as an aiohttp sub-application, to be mounted at ``/v1``::

    api = make_api_app(state.directory, state.ledger, coordination, api_settings, carriers)
    app.add_subapp("/v1", api)

Middlewares, outermost first: errors (every failure becomes ``{error, code, message?}``)
then authentication and rate limits. ``GET /v1/openapi.json`` serves the document
generated from the same route table and types the handlers use.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.api import agents, billing, calls, keys, numbers, telephony, webhooks
from gateway.api.auth import AUTH_OF, LAST_TOUCH, SETTINGS, Auth, auth_middleware
from gateway.api.carrier_api import CarrierApi
from gateway.api.errors import error_middleware
from gateway.api.http import COORDINATION, DIRECTORY, LEDGER
from gateway.api.routes import Route, openapi_document
from gateway.api.settings import ApiSettings
from gateway.store.coordination import Coordination
from gateway.store.directory import Directory
from gateway.store.ledger import Ledger

__all__ = ["ROUTES", "bind_api_state", "build_api_app", "make_api_app"]

ROUTES: list[Route] = [
    *telephony.ROUTES,
    *numbers.ROUTES,
    *agents.ROUTES,
    *calls.ROUTES,
    *billing.ROUTES,
    *keys.ROUTES,
    *webhooks.ROUTES,
]
"""Every operation of the API (the OpenAPI document is generated from this)."""

_DOCUMENT = web.AppKey("openapi", bytes)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return web.Response(body=request.app[_DOCUMENT], content_type="application/json")


def make_api_app(
    directory: Directory,
    ledger: Ledger,
    coordination: Coordination,
    settings: ApiSettings,
    carrier_api: CarrierApi,
) -> web.Application:
    """Build the ``/v1`` sub-application with its state bound.

    Args:
        directory: tenants, keys, credentials, agents, numbers.
        ledger: calls, transcripts, balances, alert settings.
        coordination: rate limits and the command channel to other instances.
        settings: limits and the admin token.
        carrier_api: the carriers' REST APIs (its session is the caller's to close).
    """
    app = build_api_app()
    bind_api_state(app, directory, ledger, coordination, settings, carrier_api)
    return app


def build_api_app() -> web.Application:
    """The ``/v1`` sub-application's routes and middlewares, with no state yet.

    The gateway mounts it before start-up and binds its state (:func:`bind_api_state`)
    from the cleanup context that opens the stores, since those need the running loop.
    """
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    auth_of: dict[object, Auth] = {openapi: Auth.NONE}
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
        auth_of[route.handler] = route.auth
    app.router.add_get("/openapi.json", openapi)
    app[AUTH_OF] = auth_of
    app[_DOCUMENT] = msgspec.json.encode(openapi_document(ROUTES))
    return app


def bind_api_state(
    app: web.Application,
    directory: Directory,
    ledger: Ledger,
    coordination: Coordination,
    settings: ApiSettings,
    carrier_api: CarrierApi,
) -> None:
    """Give a :func:`build_api_app` application the stores and clients it serves from."""
    app[DIRECTORY] = directory
    app[LEDGER] = ledger
    app[COORDINATION] = coordination
    app[SETTINGS] = settings
    app[telephony.CARRIER_API] = carrier_api
    app[LAST_TOUCH] = {}
