"""The wire contract (protocol/, MicroPython): golden vectors on CPython and the unix
port, property tests, event ids and the MQTT packet codec.

Fixtures shared with other folders live in tests/conftest.py or the simulator's
pytest plugin (simulator/pytest_plugin.py), never copied here."""
