"""``/v1/telephony``: the tenant's carrier connection (docs.rymi.live/api/telephony.html).

One active carrier per tenant: connecting another replaces the previous one and its
stored credentials. Credentials are checked against the carrier's REST API before they
are stored (:mod:`gateway.api.carrier_api`), sealed at rest, and never returned.

Credential checks are limited to 3 per 5 minutes per tenant (the docs' figure for
``validate``; ``connect`` gets its own bucket of the same size, so validating first
does not use up a connect). Only checks that reach the carrier count: a malformed body
is a 400 and costs no attempt. The limit fails *closed* when the coordination backend
is down (503): it exists to stop credential guessing through our servers.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.auth import SETTINGS, Auth
from gateway.api.carrier_api import CarrierApi
from gateway.api.http import COORDINATION, DIRECTORY, TENANT, api_error, json_response, read_json
from gateway.api.routes import Route
from gateway.api.schemas import (
    CarrierCredentialsIn,
    CarrierNumberOut,
    CarrierNumbers,
    Connected,
    CredentialField,
    Disconnected,
    ProviderInfo,
    Providers,
    TelephonyStatus,
    Validation,
)
from gateway.errors import CarrierApiError, RateLimitedError, ValidationError
from gateway.store.directory import check_credentials
from gateway.store.models import (
    CarrierCredentials,
    PlivoCredentials,
    TwilioCredentials,
    VonageCredentials,
)
from gateway.store.secrets import Secret

__all__ = ["CARRIER_API", "ROUTES"]

CARRIER_API = web.AppKey("carrier_api", CarrierApi)

_SECRET_PAIR = {"twilio": ("auth_id", "auth_token"), "plivo": ("auth_id", "auth_token")}
_PROVIDERS = Providers(
    [
        ProviderInfo(
            "plivo",
            "Plivo",
            [
                CredentialField("auth_id", "Auth ID", required=True),
                CredentialField("auth_token", "Auth Token", required=True, secret=True),
            ],
        ),
        ProviderInfo(
            "twilio",
            "Twilio",
            [
                CredentialField("auth_id", "Account SID", required=True),
                CredentialField("auth_token", "Auth Token", required=True, secret=True),
            ],
        ),
        ProviderInfo(
            "vonage",
            "Vonage",
            [
                CredentialField("api_key", "API Key", required=True),
                CredentialField("api_secret", "API Secret", required=True, secret=True),
                CredentialField(
                    "signature_secret", "Signature Secret", required=False, secret=True
                ),
            ],
        ),
    ]
)


def credentials_from(body: CarrierCredentialsIn) -> CarrierCredentials:
    """The typed credentials in a validate/connect body. Raises ValidationError (400)."""
    provider = body.provider.strip().lower()
    if provider in _SECRET_PAIR:
        account, token = _required(body, "auth_id"), _required(body, "auth_token")
        cls = TwilioCredentials if provider == "twilio" else PlivoCredentials
        credentials: CarrierCredentials = cls(account, Secret(token))
    elif provider == "vonage":
        key, secret = _required(body, "api_key"), _required(body, "api_secret")
        signature = None if body.signature_secret is None else Secret(body.signature_secret)
        credentials = VonageCredentials(key, Secret(secret), signature)
    else:
        raise ValidationError("provider", "unsupported provider: expected plivo, twilio or vonage")
    check_credentials(credentials)
    return credentials


def _required(body: CarrierCredentialsIn, name: str) -> str:
    value: str | None = getattr(body, name)
    if value is None or not value.strip():
        raise ValidationError(name, f"required for provider {body.provider.strip().lower()}")
    return value.strip()


async def _attempt(request: web.Request, action: str) -> None:
    settings = request.app[SETTINGS]
    decision = await request.app[COORDINATION].hit(
        f"api:telephony:{action}:{request[TENANT]}",
        limit=settings.credential_attempts,
        window=settings.credential_window_s,
    )
    if not decision.allowed:
        raise RateLimitedError(
            f"at most {settings.credential_attempts} credential checks "
            f"per {settings.credential_window_s:.0f} s",
            retry_after=decision.reset_after,
            code="too_many_attempts",
        )


async def providers(request: web.Request) -> web.Response:
    """The carriers one can connect, with their credential fields (no auth)."""
    return json_response(_PROVIDERS)


async def validate(request: web.Request) -> web.Response:
    """Check credentials against the carrier without storing anything."""
    credentials = credentials_from(await read_json(request, CarrierCredentialsIn))
    await _attempt(request, "validate")
    try:
        account = await request.app[CARRIER_API].account(credentials)
    except CarrierApiError as exc:
        reason = "credentials rejected by the carrier" if exc.rejected else str(exc)
        return json_response(Validation(valid=False, error=reason))
    return json_response(Validation(valid=True, accountName=account.name))


async def connect(request: web.Request) -> web.Response:
    """Check the credentials with the carrier, then store them sealed and make it active."""
    credentials = credentials_from(await read_json(request, CarrierCredentialsIn))
    await _attempt(request, "connect")
    account = await request.app[CARRIER_API].account(credentials)
    await request.app[DIRECTORY].connect_carrier(
        request[TENANT], credentials, account_name=account.name, account_country=account.country
    )
    name = credentials.carrier.capitalize()
    message = f"{name} connected; point your numbers' voice webhooks at the gateway."
    result = Connected("connected", credentials.carrier, account.name, message)  # type: ignore[arg-type]
    return json_response(result)


async def status(request: web.Request) -> web.Response:
    """Whether a carrier is connected, and which account."""
    account = await request.app[DIRECTORY].carrier_account(request[TENANT])
    if account is None:
        return json_response(TelephonyStatus(False, None, None, None))
    result = TelephonyStatus(
        True,
        account.carrier,  # type: ignore[arg-type]  # a CHECK constraint holds it to three
        account.account_name,
        account.account_country,
    )
    return json_response(result)


async def carrier_numbers(request: web.Request) -> web.Response:
    """The numbers on the connected carrier account, read live from the carrier."""
    directory, tenant = request.app[DIRECTORY], request[TENANT]
    if await directory.carrier_account(tenant) is None:
        raise api_error(404, "carrier_not_connected", "No carrier connected")
    credentials = await directory.carrier_credentials(tenant)
    numbers = await request.app[CARRIER_API].numbers(credentials)
    agents = {n.number: n.agent_id for n in await directory.list_numbers(tenant)}
    items = [
        CarrierNumberOut(
            id=n.id,
            provider=credentials.carrier,  # type: ignore[arg-type]
            phone_number=n.phone_number,
            number_status=n.status,
            backend_agent_id=agents.get(n.phone_number),
        )
        for n in numbers
    ]
    return json_response(CarrierNumbers(items))


async def disconnect(request: web.Request) -> web.Response:
    """Forget the carrier credentials (idempotent)."""
    await request.app[DIRECTORY].disconnect_carrier(request[TENANT])
    return json_response(Disconnected("disconnected", "Telephony disconnected."))


ROUTES = [
    Route(
        "GET",
        "/telephony/providers",
        providers,
        "Carrier catalog",
        "telephony",
        auth=Auth.NONE,
        responses={200: Providers},
    ),
    Route(
        "POST",
        "/telephony/validate",
        validate,
        "Check carrier credentials (nothing stored)",
        "telephony",
        body=CarrierCredentialsIn,
        responses={200: Validation},
    ),
    Route(
        "POST",
        "/telephony/connect",
        connect,
        "Connect a carrier",
        "telephony",
        body=CarrierCredentialsIn,
        responses={200: Connected},
        errors=(502,),
    ),
    Route(
        "GET",
        "/telephony/status",
        status,
        "Carrier connection status",
        "telephony",
        responses={200: TelephonyStatus},
    ),
    Route(
        "GET",
        "/telephony/numbers",
        carrier_numbers,
        "Numbers on the carrier account",
        "telephony",
        responses={200: CarrierNumbers},
        errors=(404, 502),
    ),
    Route(
        "POST",
        "/telephony/disconnect",
        disconnect,
        "Disconnect the carrier",
        "telephony",
        responses={200: Disconnected},
    ),
]
