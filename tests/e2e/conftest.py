"""End to end: several real parts together (Mosquitto, the gateway process, the
firmware on the MicroPython unix port, hostile device logins). Every test here is
marked ``e2e``, so the quick loop (``-m "not slow and not e2e and not browser"``)
leaves them to the full run."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
