# The door-cycle journal: one record, written before each step of a door
# cycle, so a power cut at any step resolves to a consistent state on boot.
#
#   opening  the lock was told to open (it may or may not have)
#   open     the door is verified open; waiting for it to close
#   closing  the door closed; the final state and the event id are fixed,
#            so replaying this step re-sends the *same* event (the gateway
#            drops the duplicate by id) and re-applies the same state.
#
# A cleared journal means no cycle is in progress.

import json


class Journal:
    def __init__(self, storage, name="journal"):
        self.storage = storage
        self.name = name

    def read(self):
        raw = self.storage.read(self.name)
        if raw is None or raw == b"":
            return None
        try:
            entry = json.loads(raw)
        except Exception:
            return {"step": "corrupt"}
        return entry if isinstance(entry, dict) else {"step": "corrupt"}

    def write(self, entry):
        self.storage.write(self.name, json.dumps(entry).encode())

    def clear(self):
        self.storage.write(self.name, b"")
