"""The device applications (firmware/): locker flows, the counter, the flash outbox,
the MQTT client, mpy-cross builds (``*_mp_check.py`` here run on MicroPython).

Fixtures shared with other folders live in tests/conftest.py or the simulator's
pytest plugin (simulator/pytest_plugin.py), never copied here."""
