"""Hand delivery checks an 80-bit token, never the 6-digit locker code: the
handheld keeps no verifier of the locker code, not from a new manifest and
not from an older parcels.json (docs/security.md, bench/code_secrecy.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from handheld.workflows import ParcelFlows
from protocol import codes


def test_tokens_are_80_random_bits_the_courier_can_scan_or_type() -> None:
    t = codes.new_token(os.urandom)
    assert len(t) == codes.TOKEN_LEN and set(t) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert codes.new_token(lambda n: b"\xff" * n) == "Z" * 16
    assert codes.new_token(lambda n: bytes(n)) == "0" * 16
    shown = codes.format_token(t)
    assert shown.startswith("PE-H:") and len(shown) == 5 + 16 + 3
    for typed in (shown, shown.lower(), t, " " + codes.TOKEN_PREFIX + " ".join(shown[5:].split("-")) + " ",
                  t.replace("0", "O").replace("1", "I")):
        assert codes.normalize_token(typed) == t
    for bad in ("", "123456", "PE-P:123456", t[:-1], t + "0", t[:-1] + "U", None, 12):
        assert codes.normalize_token(bad) is None
    assert len({codes.new_token(os.urandom) for _ in range(1000)}) == 1000


def test_an_older_parcels_json_loses_its_locker_code_verifiers(tmp_path: Path) -> None:
    salt = "0011223344556677"
    weak = codes.salted_hash(salt, "246810")
    state = {"round": "r0", "order": ["RB123456785GB"], "retrieval": {}, "commands": {}, "intake": [],
             "tries": {}, "parcels": {"RB123456785GB": {"state": "on_route", "def": {
                 "parcel": "RB123456785GB", "to": "Li Wei", "code_salt": salt, "code_hash": weak}}}}
    (tmp_path / "parcels.json").write_text(json.dumps(state))
    none: Any = None
    flows = ParcelFlows(tmp_path, "c007", "o1", none, none, none, none)
    assert flows.state["parcels"]["RB123456785GB"]["def"] == {"parcel": "RB123456785GB", "to": "Li Wei"}
    assert weak not in (tmp_path / "parcels.json").read_text()
