"""The hardware drivers (drivers/, MicroPython): lock boards and scan engines against
the simulator's byte-accurate boards, on CPython and the unix port
(``*_mp_check.py`` next to their tests run on MicroPython).

Fixtures shared with other folders live in tests/conftest.py or the simulator's
pytest plugin (simulator/pytest_plugin.py), never copied here."""
