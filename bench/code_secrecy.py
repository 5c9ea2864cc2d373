"""Code secrecy benchmark (issue 13, item 5): what it costs to recover a
recipient's secret from what a stolen handheld holds.

Measured side by side in one run, on one core of this machine, with the
same brute-force loop (``hashlib.sha256`` over salt + candidate, the
fastest thing CPython offers for it):

- **old** (the anchor): the manifest held ``code_salt`` and
  ``code_hash``, the salted SHA-256 of the 6-digit pickup code: 10^6
  candidates. The whole space is also searched for real once, to show the
  code comes back.
- **new**: the manifest holds ``token_salt`` and ``token_hash``, the salted
  SHA-256 of the 80-bit delivery token (``protocol/codes.py new_token``, 16
  Crockford base32 characters the villager shows as a QR code): 32^16 = 2^80
  candidates. A sample of tries is timed and the whole space extrapolated.
- **kdf** (the alternative not taken): the 6 digits under scrypt with a
  per-parcel salt at a cost a courier could wait for on a handheld
  (n=2^14, r=8: 16 MiB, a fraction of a second here, several times that on
  a handheld), 10^6 candidates, a few tries timed.

Figures are for the whole space (the worst case for the attacker; the
expected time is half of it) on one core; the table also gives them for all
of this machine's cores. The goal: no recovery in under a month (30 days)
on one laptop. Each run measures again; the last line gives the median of
``--runs`` (default 5).

Last line: code_secrecy old_recover_s=... new_recover_days=...
kdf_recover_days=... ratio=... goal_days=30 met=...
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import codes  # noqa: E402

DAY = 86400.0
GOAL_DAYS = 30.0
OLD_SPACE = 10**6
NEW_SPACE = 32**codes.TOKEN_LEN  # 2^80
SAMPLE = 300_000
KDF = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024}
KDF_TRIES = 5


def _target(rng: random.Random, secret: str) -> tuple[bytes, bytes]:
    salt = rng.randbytes(8)
    return salt, bytes.fromhex(codes.salted_hash(salt.hex(), secret))


def recover_old(salt: bytes, want: bytes) -> tuple[str | None, float]:
    """Search the whole 6-digit space as an attacker with the manifest would."""
    sha = hashlib.sha256
    t0 = time.perf_counter()
    found = None
    for n in range(OLD_SPACE):
        c = b"%06d" % n
        if sha(salt + c).digest() == want:
            found = c.decode()
    return found, time.perf_counter() - t0


def rate(salt: bytes, want: bytes, candidates: list[bytes]) -> float:
    """Tries per second: the candidates are made before the clock starts,
    so both sides time the hash and the compare only."""
    sha = hashlib.sha256
    t0 = time.perf_counter()
    for c in candidates:
        if sha(salt + c).digest() == want:
            pass
    return len(candidates) / (time.perf_counter() - t0)


def old_candidates() -> list[bytes]:
    return [b"%06d" % n for n in range(SAMPLE)]


def new_candidates(rng: random.Random) -> list[bytes]:
    """SAMPLE 16-character tokens: a random head, the tails counted up."""
    alphabet = [c.encode() for c in "0123456789ABCDEFGHJKMNPQRSTVWXYZ"]
    head = codes.new_token(rng.randbytes)[:12].encode()
    tails = [a + b + c + d for a in alphabet for b in alphabet for c in alphabet for d in alphabet]
    return [head + t for t in tails[:SAMPLE]]


def kdf_try_s(salt: bytes) -> float:
    ts = []
    for n in range(KDF_TRIES):
        t0 = time.perf_counter()
        hashlib.scrypt(b"%06d" % n, salt=salt, **KDF)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def one_run(seed: int, full: bool) -> dict[str, float]:
    rng = random.Random(seed)
    code = codes.new_code(rng.randbytes)
    token = codes.new_token(rng.randbytes)
    old_salt, old_hash = _target(rng, code)
    new_salt, new_hash = _target(rng, token)
    out: dict[str, float] = {}
    if full:
        found, secs = recover_old(old_salt, old_hash)
        assert found == code, "the anchor's search must give the code back"
        out["old_full_s"] = secs
    out["old_rate"] = rate(old_salt, old_hash, old_candidates())
    out["new_rate"] = rate(new_salt, new_hash, new_candidates(rng))
    out["kdf_s"] = kdf_try_s(rng.randbytes(16))
    out["old_recover_s"] = OLD_SPACE / out["old_rate"]
    out["new_recover_days"] = NEW_SPACE / out["new_rate"] / DAY
    out["kdf_recover_days"] = OLD_SPACE * out["kdf_s"] / DAY
    out["ratio"] = out["new_recover_days"] * DAY / out["old_recover_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.seed + i, full=i == 0)
        runs.append(r)
        print(f"run {i + 1}: old {r['old_rate']:,.0f} tries/s -> {r['old_recover_s']:.2f} s; "
              f"new {r['new_rate']:,.0f} tries/s -> {r['new_recover_days']:.3g} days; "
              f"scrypt {r['kdf_s'] * 1000:.0f} ms/try -> {r['kdf_recover_days']:.1f} days", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "old_full_s"}
    cores = os.cpu_count() or 1
    print()
    print(f"{'what a handheld holds':44}{'space':>6}{'tries/s':>12}{'whole space, 1 core':>22}"
          f"{f'{cores} cores':>18}")
    rows = (("old: salted SHA-256 of the 6-digit code", "10^6", med["old_rate"], med["old_recover_s"]),
            ("new: salted SHA-256 of the 80-bit token", "2^80", med["new_rate"],
             med["new_recover_days"] * DAY),
            ("not taken: scrypt(n=2^14,r=8) of 6 digits", "10^6", 1 / med["kdf_s"],
             med["kdf_recover_days"] * DAY))
    for name, space, tries, secs in rows:
        print(f"{name:44}{space:>6}{tries:>12,.0f}{_dur(secs):>22}{_dur(secs / cores):>18}")
    print(f"the anchor's real search of the whole space: {runs[0]['old_full_s']:.2f} s, code found")
    need = GOAL_DAYS * DAY / OLD_SPACE
    print(f"a 6-digit code lasts {GOAL_DAYS:.0f} days on one core only at >= {need:.2f} s per try "
          f"({need * cores:.1f} s on {cores} cores); scrypt at a courier's wait gives "
          f"{med['kdf_recover_days']:.1f} days")
    print(f"ratio new/old (time to recover) = {med['ratio']:.3g}  (median of {len(runs)} runs)")
    met = med["new_recover_days"] / cores >= GOAL_DAYS
    print(f"code_secrecy old_recover_s={med['old_recover_s']:.2f} "
          f"new_recover_days={med['new_recover_days']:.3g} kdf_recover_days={med['kdf_recover_days']:.2f} "
          f"ratio={med['ratio']:.3g} goal_days={GOAL_DAYS:.0f} met={'true' if met else 'false'}")


def _dur(secs: float) -> str:
    if secs < 120:
        return f"{secs:.2f} s"
    if secs < 2 * DAY:
        return f"{secs / 3600:.1f} h"
    if secs < 1000 * 365 * DAY:
        return f"{secs / DAY:,.1f} days"
    return f"{secs / (365 * DAY):.3g} years"


if __name__ == "__main__":
    main()
