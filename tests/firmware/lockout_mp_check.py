# Run on the MicroPython unix port by tests/firmware/test_replay_and_lockout.py:
# the per-source lockout and the replay window's checksum, shape checks and
# floor, as the locker runs them.

import binascii
import json

from firmware.locker.codes import SOURCES, Lockout
from protocol.signing import CLOCK_SKEW, MAX_LIFETIME, ReplayGuard

L = Lockout(5, 30, 3600, 3600)
t = 0
n = 0
for _ in range(86400 // 5):
    t += 5
    for s in SOURCES:
        if not L.locked(t, s):
            L.fail(t, s)
            n += 1
st = json.loads(json.dumps(L.state()))
L2 = Lockout(5, 30, 3600, 3600)
L2.restore(st, t)
assert L2.by == L.by, (L2.by, L.by)
L2.restore({"failures": 6, "until": t + 60}, t)
assert L2.remaining(t, "qr") == 60 and L.warn_at == 3
g = ReplayGuard(4)
g.add("a", 100, 10)
body = json.dumps(g.state()).encode()
raw = ("%08x " % (binascii.crc32(body) & 0xFFFFFFFF)).encode() + body
assert int(raw[:8].decode(), 16) == binascii.crc32(raw[9:]) & 0xFFFFFFFF and raw[8:9] == b" "
g2 = ReplayGuard(4)
g2.restore(json.loads(raw[9:]))
assert "a" in g2
for bad in ([1], {"floor": "x"}, {"seen": {"a": True}}):
    try:
        g2.restore(bad)
        raise SystemExit("accepted %r" % (bad,))
    except ValueError:
        pass
g2.forget(1000)
assert g2.floor == 1000 + MAX_LIFETIME + CLOCK_SKEW and "a" not in g2
assert 40 <= n <= 72, n
print("LOCKOUT_MP_OK")
