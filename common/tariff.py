"""Postage, offline, from the platform's signed tariff: integer fen (分),
never floats (``protocol/canonical.py`` refuses floats, so a signed
tariff cannot even carry one).

China Post's domestic parcel prices are a first weight (首重) and steps
of additional weight (续重) per destination zone. A tariff body::

    {"zones": {"default": "z3", "by_prefix": {"10": "z1", "52": "z2"}},
     "services": {
       "standard": {"bands": [{"up_to_g": 1000, "fen": {"z1": 800, "z2": 1000, "z3": 1200}},
                              {"up_to_g": 3000, "fen": {"z1": 1200, "z2": 1600, "z3": 2000}}],
                    "step_g": 1000, "step_fen": {"z1": 300, "z2": 500, "z3": 700},
                    "max_g": 40000},
       "charity":  {... the same shape: 公益包裹 rates, often lower or 0 ...}}}

* The zone comes from the recipient's 6-digit postcode: the longest
  prefix (2-4 digits) in ``by_prefix``, else ``default``. The first two
  digits of a Chinese postcode name the province, so a province table is
  34 entries; a county exception is a longer prefix.
* A weight up to a band's ``up_to_g`` costs that band's ``fen`` (the first
  band is the first weight); beyond the last band every started
  ``step_g`` adds ``step_fen``. Weights are whole grams from the scale.
* ``parse`` checks what makes postage well defined: bands ascending, fen
  never falling from one band to the next, every zone priced in every band
  and step, amounts within bounds. Postage is then monotone in the weight,
  which ``tests/gateway/counter/test_tariff.py`` checks as a property.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.platform_docs import DocError, SignedDoc

SERVICES = ("standard", "charity")
MAX_FEN = 10_000_000  # 100,000 yuan: far above any parcel's postage
MAX_G = 100_000
MAX_BANDS = 50
MAX_PREFIXES = 1000


class PostageError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Rate:
    bands: tuple[tuple[int, dict[str, int]], ...]
    step_g: int
    step_fen: dict[str, int]
    max_g: int


@dataclass(frozen=True)
class Quote:
    service: str
    zone: str
    weight_g: int
    fen: int

    def doc(self) -> dict[str, Any]:
        return {"service": self.service, "zone": self.zone, "weight_g": self.weight_g, "fen": self.fen}


def _int(x: object, where: str, lo: int, hi: int) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
        raise DocError("bad_body", f"{where} must be an integer {lo}-{hi}")
    return x


def _fen_table(d: object, where: str, zones: set[str] | None) -> dict[str, int]:
    if not isinstance(d, dict) or not d:
        raise DocError("bad_body", f"{where} must map zones to fen")
    out = {str(z): _int(v, f"{where}.{z}", 0, MAX_FEN) for z, v in d.items()}
    if zones is not None and set(out) != zones:
        raise DocError("bad_body", f"{where} must price exactly the zones {sorted(zones)}")
    return out


def _rate(d: object, where: str) -> Rate:
    if not isinstance(d, dict) or set(d) != {"bands", "step_g", "step_fen", "max_g"}:
        raise DocError("bad_body", f"{where} must have bands, step_g, step_fen, max_g")
    bands_in = d["bands"]
    if not isinstance(bands_in, list) or not 0 < len(bands_in) <= MAX_BANDS:
        raise DocError("bad_body", f"{where}.bands must be a list of 1-{MAX_BANDS}")
    bands: list[tuple[int, dict[str, int]]] = []
    zones: set[str] | None = None
    for i, b in enumerate(bands_in):
        w = f"{where}.bands[{i}]"
        if not isinstance(b, dict) or set(b) != {"up_to_g", "fen"}:
            raise DocError("bad_body", f"{w} must have up_to_g and fen")
        up = _int(b["up_to_g"], f"{w}.up_to_g", 1, MAX_G)
        fen = _fen_table(b["fen"], f"{w}.fen", zones)
        zones = set(fen)
        if bands:
            prev_up, prev_fen = bands[-1]
            if up <= prev_up:
                raise DocError("bad_body", f"{w}.up_to_g must be above the band before it")
            if any(fen[z] < prev_fen[z] for z in fen):
                raise DocError("bad_body", f"{w}.fen must not be below the band before it")
        bands.append((up, fen))
    step_fen = _fen_table(d["step_fen"], f"{where}.step_fen", zones)
    return Rate(tuple(bands), _int(d["step_g"], f"{where}.step_g", 1, MAX_G), step_fen,
                _int(d["max_g"], f"{where}.max_g", 1, MAX_G))


def _valid_prefix(p: str) -> bool:
    return 2 <= len(p) <= 4 and p.isascii() and p.isdigit()


class Tariff:
    """One verified tariff document."""

    def __init__(self, doc: SignedDoc) -> None:
        self.doc = doc
        body = doc.body
        zones = body.get("zones")
        services = body.get("services")
        if not isinstance(zones, dict) or not isinstance(services, dict):
            raise DocError("bad_body", "a tariff has zones and services")
        self.rates = {}
        for name, r in services.items():
            if name not in SERVICES:
                raise DocError("bad_body", f"services.{name}: unknown service (known: {', '.join(SERVICES)})")
            self.rates[name] = _rate(r, f"services.{name}")
        if "standard" not in self.rates:
            raise DocError("bad_body", "services.standard is required")
        priced = set(self.rates["standard"].step_fen)
        for name, rate in self.rates.items():
            if set(rate.step_fen) != priced:
                raise DocError("bad_body", f"services.{name} must price the zones {sorted(priced)}")
        default = zones.get("default")
        by_prefix = zones.get("by_prefix", {})
        if default not in priced:
            raise DocError("bad_body", "zones.default must be a priced zone")
        if not isinstance(by_prefix, dict) or len(by_prefix) > MAX_PREFIXES:
            raise DocError("bad_body", f"zones.by_prefix must map at most {MAX_PREFIXES} postcode prefixes")
        for p, z in by_prefix.items():
            if not _valid_prefix(p) or z not in priced:
                raise DocError("bad_body", f"zones.by_prefix.{p} must be 2-4 digits to a priced zone")
        self.default_zone: str = default
        self.by_prefix: dict[str, str] = dict(by_prefix)

    def zone_for(self, postcode: str) -> str:
        if len(postcode) != 6 or not postcode.isascii() or not postcode.isdigit():
            raise PostageError("bad_postcode", "a postcode is 6 digits")
        for n in (4, 3, 2):
            z = self.by_prefix.get(postcode[:n])
            if z is not None:
                return z
        return self.default_zone

    def quote(self, service: str, postcode: str, weight_g: int) -> Quote:
        rate = self.rates.get(service)
        if rate is None:
            raise PostageError("unknown_service", f"this tariff has no {service!r} service")
        if not isinstance(weight_g, int) or isinstance(weight_g, bool) or weight_g <= 0:
            raise PostageError("bad_weight", "weight must be a positive number of grams")
        if weight_g > rate.max_g:
            raise PostageError("over_tariff_max", f"{weight_g} g is above the {service} limit {rate.max_g} g")
        zone = self.zone_for(postcode)
        return Quote(service, zone, weight_g, postage(rate, zone, weight_g))


def postage(rate: Rate, zone: str, weight_g: int) -> int:
    """Integer fen: the band that holds the weight, or the last band plus
    every started step beyond it."""
    for up, fen in rate.bands:
        if weight_g <= up:
            return fen[zone]
    last_up, last_fen = rate.bands[-1]
    steps = -(-(weight_g - last_up) // rate.step_g)
    return last_fen[zone] + steps * rate.step_fen[zone]
