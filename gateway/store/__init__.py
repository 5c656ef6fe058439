"""State: directory, ledger and coordination (ARCHITECTURE.md "State").

* :mod:`gateway.store.directory`: tenants, API keys, carrier credentials, agents, numbers
  (SQL: SQLite by default, PostgreSQL for a fleet); its agent and API-key methods live in
  :mod:`gateway.store.agents` and :mod:`gateway.store.api_keys`.
* :mod:`gateway.store.ledger`: calls (CDRs), usage checkpoints, balance transactions.
* :mod:`gateway.store.secrets`: encryption of secrets at rest under the master keys.
* :mod:`gateway.store.reaper`: finalizes calls whose gateway died.
* :mod:`gateway.store.coordination`: leases, live-call registry, command channel.

Submodules are imported by their users; importing this package imports nothing heavy.
"""
