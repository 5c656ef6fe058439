"""The call engine's edges: aiohttp routes, media WebSockets, per-call task groups.

* :mod:`gateway.server.app`: the application factory and the per-instance loops.
* :mod:`gateway.server.answer`: ``/inbound/{provider}`` (admit or refuse).
* :mod:`gateway.server.media_ws`: ``/media/{provider}/{token}`` (verify, start, claim).
* :mod:`gateway.server.call`: one call's task group; :mod:`gateway.server.finish` its end.

Decisions live in the pure :mod:`gateway.session` and :mod:`gateway.media`; see
docs/call-engine.md.
"""

from gateway.server.app import METRICS, create_app, default_links
from gateway.server.context import ENGINE, Engine

__all__ = ["ENGINE", "METRICS", "Engine", "create_app", "default_links"]
