"""rymi-gateway: a real-time voice media gateway for AI voice agents.

The layers (see ../shared/ARCHITECTURE.md and docs/architecture.md):

* ``rymi_codecs`` (folder ``codecs/``): pure audio transforms, no asyncio.
* ``gateway.carriers``: sans-I/O carrier adapters (Twilio, Plivo, Vonage).
* ``gateway.session`` / ``gateway.metering``: pure call state and billing rules.
* ``gateway.server`` / ``gateway.bridge``: the asyncio edges.
* ``gateway.store``: directory, ledger and coordination backends.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
