# Pickup codes and courier credentials: only salted hashes are stored, and
# wrong attempts are rationed per input source.
#
# A 6-digit code has a million values; a keypad brute force at one try per
# second would find one of a locker's dozens of live codes within hours.
# After `budget` wrong attempts from a source, each further wrong attempt
# doubles that source's lockout (base, 2*base, ... up to max), during which
# the source is refused. Every attempt is written to the audit log.
#
# A source is the input a code came through: "keypad" or "qr" (the scan
# module). A locker with one keypad cannot tell people apart, so these are
# the only sources it can name honestly, and it follows that:
# - a right code resets nothing: on the same keypad the locker cannot know
#   whether the guesser or a villager typed it, so a pickup must not give a
#   guesser fresh tries;
# - wrong codes are forgiven with time instead, one per `forgive_s` (a
#   leaky bucket), so honest typos spread over days never add up;
# - a guesser locks out only the source they use: a villager can still scan
#   the QR code of their notice while the keypad is locked, or type the code
#   while the scanner is;
# - the clerk is warned (alarm `code_guessing`) when a source reaches
#   `budget - WARN_BEFORE` failures, before the lockout engages.
# Guesses per day under the defaults: docs/security.md.

from protocol.codes import matches, new_code, new_salt, salted_hash  # noqa: F401 - locker API

SOURCES = ("keypad", "qr")
WARN_BEFORE = 2


class Lockout:
    def __init__(self, budget, base_s, max_s, forgive_s=3600):
        self.budget = budget
        self.base_s = base_s
        self.max_s = max_s
        self.forgive_s = forgive_s
        # source -> [failures, locked until, forgiveness counted since]
        self.by = {}

    @property
    def warn_at(self):
        return max(1, self.budget - WARN_BEFORE)

    def locked(self, now, src=None):
        return self.remaining(now, src) > 0

    def remaining(self, now, src=None):
        """Seconds left for `src`; for every source, the longest."""
        r = 0
        for k in self.by:
            if src is None or k == src:
                r = max(r, self.by[k][1] - now)
        return r

    def failures(self, now, src):
        e = self.by.get(src)
        if e is None:
            return 0
        self._forgive(e, now)
        return e[0]

    def _forgive(self, e, now):
        if e[0] == 0:
            e[2] = now
            return
        k = (now - e[2]) // self.forgive_s
        if k > 0:
            e[0] = max(0, e[0] - k)
            e[2] = now if e[0] == 0 else e[2] + k * self.forgive_s

    def fail(self, now, src):
        """Count a wrong code from `src`; return its failures now."""
        e = self.by.get(src)
        if e is None:
            e = self.by[src] = [0, 0, now]
        self._forgive(e, now)
        e[0] += 1
        over = e[0] - self.budget
        if over >= 0:
            e[1] = now + min(self.base_s * (1 << min(over, 20)), self.max_s)
        return e[0]

    def state(self):
        return {"by": self.by}

    def restore(self, st, now):
        self.by = {}
        by = st.get("by")
        if isinstance(by, dict):
            for k in by:
                e = by[k]
                if isinstance(k, str) and isinstance(e, list) and len(e) == 3 and \
                        all(isinstance(x, int) for x in e):
                    self.by[k] = list(e)
        elif "failures" in st:
            # A locker-wide count from before sources: it holds for each.
            for k in SOURCES:
                self.by[k] = [st.get("failures", 0), st.get("until", 0), now]
