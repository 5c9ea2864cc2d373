# Event ids that are unique forever: "<device>:<incarnation>:<seq>".
#
# - device: the device id (globally unique, e.g. derived from the MAC).
# - incarnation: 8 hex digits drawn at random the first time a device's
#   storage is formatted. A flash wipe or a corrupt counter file starts a new
#   incarnation, so a reset sequence can never collide with ids already sent.
# - seq: a per-incarnation counter that survives reboots. It is persisted
#   *before* a number is handed out (write-ahead reservation), so a power cut
#   may skip numbers but never reuses one. `block` > 1 reserves numbers in
#   blocks to spare flash; a reboot then skips at most block-1 numbers, and
#   the boot counter carried in envelopes lets the gateway tell such a skip
#   from a real loss.

import os

from protocol.errors import BadField
from protocol.topics import valid_segment


def format_event_id(device, inc, seq):
    return "%s:%s:%d" % (device, inc, seq)


def _ascii_digits(s):
    for c in s:
        if not "0" <= c <= "9":
            return False
    return True


def _is_hex8(s):
    if len(s) != 8:
        return False
    for c in s:
        if not ("0" <= c <= "9" or "a" <= c <= "f"):
            return False
    return True


def parse_event_id(event_id, device=None):
    """Return (device, incarnation, seq) or raise BadField.

    With `device` (already validated, e.g. from the topic) the id must name
    that device: a receiver refuses an event published under another name.
    """
    if not isinstance(event_id, str):
        raise BadField("id must be a string")
    parts = event_id.split(":")
    if len(parts) != 3:
        raise BadField("id %r is not <device>:<incarnation>:<seq>" % (event_id,))
    dev, inc, seq = parts
    if device is not None and dev != device:
        if not valid_segment(dev):
            raise BadField("id %r: bad device %r" % (event_id, dev))
        raise BadField("event id names device %s but was published by %s" % (dev, device))
    if device is None and not valid_segment(dev):
        raise BadField("id %r: bad device %r" % (event_id, dev))
    if not _is_hex8(inc):
        raise BadField("id %r: incarnation must be 8 lowercase hex digits" % (event_id,))
    # ASCII digits only: CPython's isdigit() also accepts e.g. Arabic-Indic
    # digits, which would give one event two spellings of its id.
    if not seq or len(seq) > 15 or not _ascii_digits(seq) or seq[0] == "0":
        raise BadField("id %r: seq must be a positive integer without leading zeros" % (event_id,))
    return (dev, inc, int(seq))


def _new_incarnation():
    b = os.urandom(4)
    return "%02x%02x%02x%02x" % (b[0], b[1], b[2], b[3])


class SeqCounter:
    """Persistent per-device sequence with write-ahead reservation.

    `storage` has read(name) -> bytes or None and write(name, bytes), the
    write atomic (write a temporary file, then rename).
    """

    def __init__(self, storage, name="seq", block=1):
        if block < 1:
            raise ValueError("block must be >= 1")
        self._storage = storage
        self._name = name
        self._block = block
        inc, boot, hwm = self._load()
        self.incarnation = inc
        self.boot = boot + 1
        self._next = hwm
        self._hwm = hwm
        self._save()

    def _load(self):
        raw = self._storage.read(self._name)
        if raw is None:
            return (_new_incarnation(), 0, 1)
        try:
            parts = raw.decode().split()
            inc, boot, hwm = parts[0], int(parts[1]), int(parts[2])
            if not _is_hex8(inc) or boot < 0 or hwm < 1:
                raise ValueError("out of range")
            return (inc, boot, hwm)
        except Exception:
            # Unreadable counter: numbers already used are unknown, so only a
            # new incarnation is safe.
            self.corrupt = True
            return (_new_incarnation(), 0, 1)

    corrupt = False

    def _save(self):
        self._storage.write(self._name, ("%s %d %d\n" % (self.incarnation, self.boot, self._hwm)).encode())

    def next(self):
        """Hand out the next sequence number, persisting a reservation first."""
        if self._next >= self._hwm:
            self._hwm = self._next + self._block
            self._save()
        n = self._next
        self._next += 1
        return n

    def peek(self):
        return self._next
