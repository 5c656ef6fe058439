"""The agent bridge: the gateway's side of the agent protocol (docs/agent-protocol.md).

* :mod:`gateway.bridge.protocol` is pure: the message types, their JSON encoding and
  strict decoding, binary audio checks, and the short-lived bearer token the gateway
  presents when it connects to an agent's WebSocket URL.
* The WebSocket client that carries those messages (an edge: aiohttp, timers, back
  pressure) and the built-in in-process agents sit beside it.
"""
