"""Register the settings' secrets with the log safety net (:func:`gateway.log.register_secret`).

Called by ``serve`` right after the settings are read and again by the app factory, so
that neither the admin token nor a master key (in the url-safe base64 form operators
paste into ``RYMI_MASTER_KEYS``, with or without padding) can appear in a log line, a
traceback or an error message, whatever a bug passes to a logger.
"""

from __future__ import annotations

import base64

from gateway.config import Settings
from gateway.log import register_secret

__all__ = ["register_settings_secrets"]


def register_settings_secrets(settings: Settings) -> None:
    """Register ``settings.admin_token`` and every master key (idempotent)."""
    if settings.admin_token:
        register_secret(settings.admin_token)
    for key in settings.master_keys:
        encoded = base64.urlsafe_b64encode(key).decode("ascii")
        register_secret(encoded)
        register_secret(encoded.rstrip("="))
