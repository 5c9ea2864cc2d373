# asyncio shims shared by the firmware and the drivers: the one place that papers over the
# differences between MicroPython's asyncio and CPython's.

import asyncio


def sleep_ms(ms):
    """MicroPython's asyncio has sleep_ms; CPython's has only sleep(seconds)."""
    if hasattr(asyncio, "sleep_ms"):
        return asyncio.sleep_ms(ms)
    return asyncio.sleep(ms / 1000)
