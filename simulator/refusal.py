"""A workload action the outlet refused, with its reason.

Raised by the outlet's flows (``simulator/outlet_flows.py``,
``simulator/board_flows.py``); ``simulator/actions.py`` counts it as
``<action>_refused_<reason>``, which the report lists by reason
(``simulator/results.py``, ``refusals``). A module of its own so the flow
modules share it without importing each other.
"""

from __future__ import annotations


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
