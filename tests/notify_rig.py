"""Shared by the notifier's tests: deposits as a locker seals them, contacts
as the platform signs them, and a gateway config with a notifier."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway.notify import contacts
from gateway.store.events import StoredEvent
from protocol import envelope, seal
from protocol.ids import format_event_id
from simulator.platform_keys import PlatformKeys

INC = "0badcafe"
PK = PlatformKeys("o1")
PHONE = "+8613800138000"


def deposit(dev: str, seq: int, parcel: str, code: str, expires: int | None = None, code_by: str = "locker",
            compartment: int = 3) -> StoredEvent:
    eid = format_event_id(dev, INC, seq)
    now = int(time.time())
    body: dict[str, Any] = {"compartment": compartment, "parcel": parcel, "courier": "c007",
                            "expires": expires or now + 3 * 86400, "code_by": code_by}
    if code_by == "locker":
        body["code_sealed"] = {
            "platform": seal.seal("platform", PK.key(dev), 1, eid, parcel, code),
            "notifier": seal.seal("notifier", seal.locker_notify_key(PK.notifier_key(), dev), 1, eid, parcel,
                                  code)}
    payload = envelope.encode(envelope.make(eid, now, "locker.deposit", "custody", body, boot=1))
    return StoredEvent(eid, "o1", "locker", dev, INC, seq, "custody", "locker.deposit", now, payload)


def pickup(dev: str, seq: int, parcel: str) -> StoredEvent:
    eid = format_event_id(dev, INC, seq)
    now = int(time.time())
    payload = envelope.encode(envelope.make(eid, now, "locker.pickup", "custody",
                                            {"compartment": 3, "parcel": parcel}, boot=1))
    return StoredEvent(eid, "o1", "locker", dev, INC, seq, "custody", "locker.pickup", now, payload)


def contact(parcel: str, phone: str = PHONE, lang: str = "zh", cid: str | None = None,
            key: bytes | None = None) -> bytes:
    cmd = contacts.make(key or PK.notifier_key(), 1, cid or f"ct-{parcel.lower()}", parcel, phone, lang,
                        int(time.time()))
    return json.dumps(cmd).encode()


def key_file(path: Path) -> Path:
    path.write_text(f'[keys]\n"1" = "{PK.notifier_key().hex()}"\n')
    return path


def notify_table(modem: Path | str, keys: Path, **kw: Any) -> dict[str, Any]:
    return {"modem": str(modem), "key_file": str(keys), "name_zh": "石桥村邮站", "name_en": "Shiqiao post",
            "interval_s": 0.1, "timeout_s": 0.5, "send_timeout_s": 1.0, "backoff_base_s": 0.05,
            "backoff_cap_s": 0.2, **kw}
