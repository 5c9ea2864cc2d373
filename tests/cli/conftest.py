"""The ``postedge`` command (postedge/): validate, firmware bundles and packaging.

Fixtures shared with other folders live in tests/conftest.py or the simulator's
pytest plugin (simulator/pytest_plugin.py), never copied here."""
