"""The gateway (gateway/): broker config and ACL, ingest, sync, downlink, uploads,
the status page and web API. Shared fixtures (``broker``, ``connect``, ``uplink``)
come from tests/conftest.py.

Fixtures shared with other folders live in tests/conftest.py or the simulator's
pytest plugin (simulator/pytest_plugin.py), never copied here."""
