# Pickup codes and courier credentials: only salted hashes are stored, and
# wrong attempts are rationed per locker.
#
# A 6-digit code has a million values; a keypad brute force at one try per
# second would find one of a locker's dozens of live codes within hours.
# After `budget` wrong attempts each further wrong attempt doubles a lockout
# delay (base, 2*base, ... up to max), during which the keypad refuses input;
# a right code resets the count. Every attempt is written to the audit log.

from protocol.codes import matches, new_code, new_salt, salted_hash  # noqa: F401 - locker API


class Lockout:
    def __init__(self, budget, base_s, max_s):
        self.budget = budget
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0
        self.until = 0

    def locked(self, now):
        return now < self.until

    def remaining(self, now):
        return max(0, self.until - now)

    def fail(self, now):
        self.failures += 1
        over = self.failures - self.budget
        if over >= 0:
            delay = self.base_s * (1 << min(over, 20))
            self.until = now + min(delay, self.max_s)

    def success(self):
        self.failures = 0
        self.until = 0

    def state(self):
        return {"failures": self.failures, "until": self.until}

    def restore(self, st):
        self.failures = st.get("failures", 0)
        self.until = st.get("until", 0)
