"""The agent bridge: the gateway's side of the agent protocol (docs/agent-protocol.md).

* :mod:`gateway.bridge.protocol` is pure: the message types, their JSON encoding and
  strict decoding, binary audio checks, and the short-lived bearer token the gateway
  presents when it connects to an agent's WebSocket URL.
* :mod:`gateway.bridge.link`: :class:`AgentLink`, the one interface the call engine uses
  for a call's agent leg, whatever the agent is.
* :mod:`gateway.bridge.picows_link`: the link to an agent at a ``ws://``/``wss://`` URL
  (picows), and :mod:`gateway.bridge.websocket` its aiohttp fallback, kept for
  side-by-side measurement; :mod:`gateway.bridge.wsclient` holds what the two share.
* :mod:`gateway.bridge.builtin` and :mod:`gateway.bridge.echo`: in-process agents
  (``echo``, ``silence``) behind the same interface.

An agent's ``pipeline`` (see ``gateway.store``) is either a built-in name or a URL; this
module turns it into a link::

    link = make_link(agent.pipeline, secret=secret)  # transport="aiohttp" needs session=
    try:
        await link.open(start)
        ...
    finally:
        await link.close(Stop(reason=end_reason))
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import aiohttp

from gateway.bridge.builtin import AgentCore, BuiltinLink, CoreFactory, SinkCore
from gateway.bridge.echo import EchoCore
from gateway.bridge.link import AgentItem, AgentLink, AudioSink, LinkFailure, LinkStats
from gateway.bridge.picows_link import PicowsLink
from gateway.bridge.protocol import Start
from gateway.bridge.websocket import WebSocketLink
from gateway.bridge.wsclient import WebSocketSettings
from gateway.errors import ConfigError, UnknownBuiltinError

__all__ = [
    "BUILTINS",
    "AgentCore",
    "AgentItem",
    "AgentLink",
    "AudioSink",
    "BuiltinLink",
    "CoreFactory",
    "LinkFailure",
    "LinkStats",
    "LinkTransport",
    "PicowsLink",
    "WebSocketLink",
    "WebSocketSettings",
    "builtin",
    "is_websocket_pipeline",
    "make_link",
    "open_link",
]

LinkTransport = Literal["picows", "aiohttp"]
"""The WebSocket client library behind a URL pipeline's link."""

BUILTINS: Mapping[str, CoreFactory] = MappingProxyType({"echo": EchoCore, "silence": SinkCore})
"""Built-in agents by pipeline name."""


def builtin(name: str) -> CoreFactory:
    """The core factory of the built-in agent ``name``.

    Raises:
        UnknownBuiltinError: no built-in agent has that name.
    """
    try:
        return BUILTINS[name]
    except KeyError:
        known = ", ".join(sorted(BUILTINS))
        raise UnknownBuiltinError(
            f"no built-in agent named {name[:64]!r}; expected one of {known} or a ws(s):// URL"
        ) from None


def is_websocket_pipeline(pipeline: str) -> bool:
    """Whether ``pipeline`` is an agent's WebSocket URL (rather than a built-in name)."""
    return pipeline.startswith(("ws://", "wss://"))


def make_link(
    pipeline: str,
    *,
    session: aiohttp.ClientSession | None = None,
    secret: bytes | None = None,
    settings: WebSocketSettings | None = None,
    transport: LinkTransport = "picows",
) -> AgentLink:
    """A new, unopened link to the agent named by ``pipeline``.

    Args:
        pipeline: a built-in name (:data:`BUILTINS`) or a ``ws://``/``wss://`` URL.
        session: the process's shared HTTP client session (URLs over aiohttp only).
        secret: the agent's shared secret (needed for URLs).
        settings: WebSocket timeouts and limits (URLs only).
        transport: the WebSocket client for URLs: ``picows`` (:class:`PicowsLink`, the
            default) or ``aiohttp`` (:class:`WebSocketLink`, the fallback).

    Raises:
        UnknownBuiltinError: ``pipeline`` is neither a URL nor a built-in name.
        ConfigError: a URL pipeline without a secret, or over aiohttp without a session.
    """
    if not is_websocket_pipeline(pipeline):
        return BuiltinLink(builtin(pipeline), name=pipeline)
    if secret is None:
        raise ConfigError("pipeline", "a WebSocket agent needs its secret")
    if transport == "picows":
        return PicowsLink(pipeline, secret, settings=settings)
    if session is None:
        raise ConfigError("pipeline", "a WebSocket agent over aiohttp needs the HTTP session")
    return WebSocketLink(session, pipeline, secret, settings=settings)


async def open_link(
    pipeline: str,
    start: Start,
    *,
    session: aiohttp.ClientSession | None = None,
    secret: bytes | None = None,
    settings: WebSocketSettings | None = None,
    transport: LinkTransport = "picows",
) -> AgentLink:
    """:func:`make_link`, then :meth:`AgentLink.open` with ``start``.

    A link that fails to open has already released what it held.

    Raises:
        UnknownBuiltinError, ConfigError: as :func:`make_link`.
        AgentError: as :meth:`AgentLink.open`.
    """
    link = make_link(
        pipeline, session=session, secret=secret, settings=settings, transport=transport
    )
    await link.open(start)
    return link
