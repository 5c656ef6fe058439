"""The public REST API under ``/v1`` (tenants manage carriers, numbers, agents, calls).

See docs/api.md. :func:`make_api_app` builds the aiohttp sub-application.
"""

from gateway.api.app import ROUTES, make_api_app
from gateway.api.carrier_api import CarrierApi, CarrierApiUrls
from gateway.api.settings import ApiSettings

__all__ = ["ROUTES", "ApiSettings", "CarrierApi", "CarrierApiUrls", "make_api_app"]
