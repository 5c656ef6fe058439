"""``/v1/agents``: the agent fields the gateway uses, and every other field kept as given.

The gateway interprets ``name``, ``agent_role`` (the rate), ``advanced.maxCallDuration``
(seconds, 30-7200, default 600; out of range is a 400 naming the range, never clamped),
``pipeline`` (a built-in agent or an agent-protocol WebSocket URL with its secret) and
``barge_in`` (``on``/``off``). Anything else a client sends (``system_prompt``,
``voice``, ``language``, other ``advanced`` keys, ...) is stored as it is and returned
beside those fields (docs.rymi.live/api/agents.html lists many; the SDK passes
``**kwargs`` through). Read-only fields a client echoes back (``id``, ``published``,
``created_at``...) are ignored. ``PUT`` and ``PATCH`` both update only what they carry
(the SDK's ``update`` sends a partial body with ``PUT``).

A pipeline's secret is sealed at rest and never returned: responses say ``has_secret``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.api.http import DIRECTORY, TENANT, api_error, iso_ms, json_response, read_json
from gateway.api.http import read_query as read_page
from gateway.api.routes import Route
from gateway.api.schemas import (
    AgentDeleted,
    AgentList,
    AgentOut,
    AgentPublished,
    AgentWrite,
    BuiltinPipeline,
    PageQuery,
    PipelineOut,
)
from gateway.errors import ValidationError
from gateway.store.models import (
    DEFAULT_MAX_CALL_DURATION_S,
    MAX_CALL_DURATION_RANGE_S,
    Agent,
)
from gateway.store.secrets import Secret

__all__ = ["ROUTES", "agent_out"]

_INTERPRETED = frozenset(AgentWrite.__struct_fields__)
_READ_ONLY = frozenset({"id", "published", "created_at", "updated_at", "tenant_id", "blockers"})


def agent_out(agent: Agent) -> dict[str, Any]:
    """The API shape of an agent: its kept fields, then the interpreted ones on top."""
    stored_advanced = agent.extra.get("advanced")
    advanced = dict(stored_advanced) if isinstance(stored_advanced, dict) else {}
    advanced["maxCallDuration"] = agent.max_call_duration_s
    builtin = agent.builtin
    out = AgentOut(
        id=agent.id,
        name=agent.name,
        agent_role=agent.role.value,
        published=agent.published,
        advanced=advanced,
        pipeline=PipelineOut(
            type="builtin" if builtin else "websocket",
            name=agent.pipeline if builtin else None,
            url=None if builtin else agent.pipeline,
            has_secret=agent.has_pipeline_secret,
        ),
        barge_in=agent.barge_in.value,
        created_at=iso_ms(agent.created_at_ms) or "",
        updated_at=iso_ms(agent.updated_at_ms) or "",
    )
    kept = {k: v for k, v in agent.extra.items() if k != "advanced"}
    shown: dict[str, Any] = msgspec.to_builtins(out)
    return kept | shown


async def _read_agent(request: web.Request) -> tuple[AgentWrite, dict[str, Any]]:
    """The interpreted fields, validated, and the fields to keep as given."""
    raw = await read_json(request, dict[str, Any])
    try:
        write = msgspec.convert(raw, AgentWrite)
    except msgspec.ValidationError as exc:
        raise api_error(400, "invalid_request", "Invalid request", str(exc)) from None
    kept = {k: v for k, v in raw.items() if k not in _INTERPRETED and k not in _READ_ONLY}
    advanced = raw.get("advanced")
    if isinstance(advanced, dict):
        rest = {k: v for k, v in advanced.items() if k != "maxCallDuration"}
        if rest:
            kept["advanced"] = rest
    if write.advanced is not None and write.advanced.maxCallDuration is not None:
        low, high = MAX_CALL_DURATION_RANGE_S
        if not low <= write.advanced.maxCallDuration <= high:
            raise ValidationError(
                "advanced.maxCallDuration",
                f"expected an integer {low}-{high} (seconds), got {write.advanced.maxCallDuration}",
            )
    return write, kept


def _changes(write: AgentWrite) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if write.name is not None:
        changes["name"] = write.name
    if write.agent_role is not None:
        changes["role"] = write.agent_role
    if write.barge_in is not None:
        changes["barge_in"] = write.barge_in
    if write.advanced is not None and write.advanced.maxCallDuration is not None:
        changes["max_call_duration_s"] = write.advanced.maxCallDuration
    if isinstance(write.pipeline, BuiltinPipeline):
        changes["pipeline"] = write.pipeline.name
        changes["pipeline_secret"] = None
    elif write.pipeline is not None:
        changes["pipeline"] = write.pipeline.url
        secret = write.pipeline.secret
        changes["pipeline_secret"] = None if secret is None else Secret(secret)
    return changes


async def create_agent(request: web.Request) -> web.Response:
    """Create an agent (a draft: publish it to take calls)."""
    write, kept = await _read_agent(request)
    if write.name is None:
        raise ValidationError("name", "required: 1-200 characters of text")
    changes = {"max_call_duration_s": DEFAULT_MAX_CALL_DURATION_S} | _changes(write)
    agent = await request.app[DIRECTORY].create_agent(request[TENANT], extra=kept, **changes)
    return json_response(agent_out(agent), status=201)


async def list_agents(request: web.Request) -> web.Response:
    """The tenant's agents, oldest first, a page at a time."""
    page = read_page(request, PageQuery)
    agents = await request.app[DIRECTORY].list_agents(request[TENANT])
    chosen = agents[page.offset : page.offset + page.limit]
    body = {
        "agents": [agent_out(a) for a in chosen],
        "total": len(agents),
        "offset": page.offset,
        "limit": page.limit,
    }
    return json_response(body)


async def get_agent(request: web.Request) -> web.Response:
    """One agent."""
    agent = await request.app[DIRECTORY].get_agent(request[TENANT], request.match_info["agent_id"])
    return json_response(agent_out(agent))


async def update_agent(request: web.Request) -> web.Response:
    """Change the fields the body carries; kept fields are merged key by key."""
    directory, tenant = request.app[DIRECTORY], request[TENANT]
    agent_id = request.match_info["agent_id"]
    current = await directory.get_agent(tenant, agent_id)
    write, kept = await _read_agent(request)
    changes = _changes(write)
    if kept:
        merged = current.extra | kept
        old_adv, new_adv = current.extra.get("advanced"), kept.get("advanced")
        if isinstance(old_adv, dict) and isinstance(new_adv, dict):
            merged["advanced"] = old_adv | new_adv
        changes["extra"] = merged
    agent = await directory.update_agent(tenant, agent_id, **changes) if changes else current
    return json_response(agent_out(agent))


async def delete_agent(request: web.Request) -> web.Response:
    """Delete an agent; its numbers stay registered, detached."""
    agent_id = request.match_info["agent_id"]
    await request.app[DIRECTORY].delete_agent(request[TENANT], agent_id)
    return json_response(AgentDeleted("deleted", agent_id))


async def publish_agent(request: web.Request) -> web.Response:
    """Publish: calls to the agent's numbers are answered from now on."""
    agent_id = request.match_info["agent_id"]
    agent = await request.app[DIRECTORY].set_published(request[TENANT], agent_id, True)
    return json_response(AgentPublished(agent.published, agent.id))


async def unpublish_agent(request: web.Request) -> web.Response:
    """Back to draft: calls to its numbers are refused (``agent_not_published``)."""
    agent_id = request.match_info["agent_id"]
    agent = await request.app[DIRECTORY].set_published(request[TENANT], agent_id, False)
    return json_response(AgentPublished(agent.published, agent.id))


_ONE = "/agents/{agent_id}"
ROUTES = [
    Route(
        "POST",
        "/agents",
        create_agent,
        "Create an agent",
        "agents",
        body=AgentWrite,
        responses={201: AgentOut},
    ),
    Route(
        "GET",
        "/agents",
        list_agents,
        "List agents",
        "agents",
        query=PageQuery,
        responses={200: AgentList},
    ),
    Route("GET", _ONE, get_agent, "Retrieve an agent", "agents", responses={200: AgentOut}),
    Route(
        "PUT",
        _ONE,
        update_agent,
        "Update an agent (partial)",
        "agents",
        body=AgentWrite,
        responses={200: AgentOut},
    ),
    Route(
        "PATCH",
        _ONE,
        update_agent,
        "Update an agent (partial)",
        "agents",
        body=AgentWrite,
        responses={200: AgentOut},
    ),
    Route("DELETE", _ONE, delete_agent, "Delete an agent", "agents", responses={200: AgentDeleted}),
    Route(
        "POST",
        _ONE + "/publish",
        publish_agent,
        "Publish an agent",
        "agents",
        responses={200: AgentPublished},
    ),
    Route(
        "POST",
        _ONE + "/unpublish",
        unpublish_agent,
        "Unpublish an agent",
        "agents",
        responses={200: AgentPublished},
    ),
]
