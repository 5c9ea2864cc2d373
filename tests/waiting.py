"""Polling for what another process or thread will do, for tests.

A test that waits on a gateway, a broker or a device asks "is it there
yet?" until a deadline: ``within`` answers whether it came in time (the
test then asserts with its own message), ``until`` fails the test naming
what never came. The deadline is generous on purpose: it is reached only by
a failing test, and a loaded two-core box is slow, not broken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

DEFAULT_S = 30.0


def within(pred: Callable[[], Any], timeout: float = DEFAULT_S, step: float = 0.05) -> bool:
    """Whether ``pred()`` became true before ``timeout`` seconds (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def until(pred: Callable[[], Any], timeout: float = DEFAULT_S, what: str = "the condition",
          step: float = 0.05) -> None:
    """Wait for ``pred()``; the test fails naming ``what`` if it never comes."""
    if not within(pred, timeout, step):
        raise AssertionError(f"timed out waiting for {what}")
