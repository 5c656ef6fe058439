"""Signed webhooks, delivered durably (docs/webhooks.md).

* :mod:`gateway.webhooks.events`: the catalog, payload builders, signatures and delivery
  headers (pure).
* :mod:`gateway.webhooks.urls`: where webhooks may be sent (SSRF rules).
* :mod:`gateway.webhooks.outbox`: writing events in the cause's transaction; claiming
  and settling deliveries (SQL).
* :mod:`gateway.webhooks.endpoints`: endpoints, sealed secrets, delivery history (SQL).
* :mod:`gateway.webhooks.dispatcher`: the delivery loop (SQL, HTTP).
* :mod:`gateway.webhooks.alerts`: dead-letter alerts and the metric hook interface.

Submodules are imported by their users: the store imports the outbox writer, so this
package imports nothing on its own (no import cycles).
"""
