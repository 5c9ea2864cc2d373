"""The simulator (simulator/): scenarios and the runner, the fault proxy, the ledger,
reports and the dashboard, and its pytest plugin (whose fixtures every test can use).

Fixtures shared with other folders live in tests/conftest.py or the simulator's
pytest plugin (simulator/pytest_plugin.py), never copied here."""
