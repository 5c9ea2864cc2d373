# The postedge wire protocol: one source of truth shared by firmware
# (ESP32 / unix port), gateway, handheld and simulator. Every module in this
# package is written in the subset of Python that MicroPython runs: no typing,
# no dataclasses, no re counted repetition, no CPython-only modules.
PROTOCOL_VERSION = 1
