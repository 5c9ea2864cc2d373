"""The box catalogue: the outlet's standard boxes (标准箱), pushed and
signed by the platform (``common/platform_docs.py``).

Body of a ``box_catalogue`` document::

    {"boxes": [{"code": "PE-BOX-F5", "name": {"zh": "水果箱 5 号", "en": "Fruit box 5"},
                "l_mm": 400, "w_mm": 300, "h_mm": 250, "tare_g": 450, "max_g": 10000,
                "suits": ["fruit", "produce"]}, ...]}

The clerk scans the code printed on the flat box; a code not in the
catalogue is refused (``unknown_box``), as is a parcel heavier than the
box's ``max_g`` (``overweight``). ``suits`` names what a box is made for
(fruit, eggs, documents, produce, clothing, charity, general): the page
shows it, the gateway does not police contents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.platform_docs import DocError, SignedDoc

SUITS = ("fruit", "eggs", "produce", "documents", "clothing", "charity", "general", "fragile")
MAX_BOXES = 200
MAX_CODE = 32
MAX_G = 100_000  # no China Post parcel weighs more than 100 kg at a counter
MAX_MM = 3000
_CODE_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


@dataclass(frozen=True)
class Box:
    code: str
    name: dict[str, str]
    l_mm: int
    w_mm: int
    h_mm: int
    tare_g: int
    max_g: int
    suits: tuple[str, ...]

    def doc(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "l_mm": self.l_mm, "w_mm": self.w_mm,
                "h_mm": self.h_mm, "tare_g": self.tare_g, "max_g": self.max_g, "suits": list(self.suits)}


def valid_code(code: object) -> bool:
    return isinstance(code, str) and 0 < len(code) <= MAX_CODE and set(code) <= _CODE_CHARS


def _int(d: dict[str, Any], f: str, where: str, lo: int, hi: int) -> int:
    x = d.get(f)
    if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
        raise DocError("bad_body", f"{where}.{f} must be an integer {lo}-{hi}")
    return x


class Catalogue:
    """The boxes of one verified catalogue document, by code."""

    def __init__(self, doc: SignedDoc) -> None:
        self.doc = doc
        boxes = doc.body.get("boxes")
        if not isinstance(boxes, list) or not 0 < len(boxes) <= MAX_BOXES:
            raise DocError("bad_body", f"boxes must be a list of 1-{MAX_BOXES}")
        self.boxes: dict[str, Box] = {}
        for i, b in enumerate(boxes):
            where = f"boxes[{i}]"
            if not isinstance(b, dict):
                raise DocError("bad_body", f"{where} must be an object")
            code = b.get("code")
            if not valid_code(code):
                raise DocError("bad_body", f"{where}.code must be 1-{MAX_CODE} of A-Z 0-9 -")
            assert isinstance(code, str)
            if code in self.boxes:
                raise DocError("bad_body", f"{where}.code {code} appears twice")
            name = b.get("name")
            if (not isinstance(name, dict) or set(name) != {"zh", "en"}
                    or not all(isinstance(v, str) and 0 < len(v) <= 40 for v in name.values())):
                raise DocError("bad_body", f"{where}.name must be {{zh, en}}, each 1-40 characters")
            suits = b.get("suits")
            if not isinstance(suits, list) or not suits or not all(s in SUITS for s in suits):
                raise DocError("bad_body", f"{where}.suits must name some of {', '.join(SUITS)}")
            max_g = _int(b, "max_g", where, 1, MAX_G)
            self.boxes[code] = Box(code, dict(name), _int(b, "l_mm", where, 1, MAX_MM),
                                   _int(b, "w_mm", where, 1, MAX_MM), _int(b, "h_mm", where, 1, MAX_MM),
                                   _int(b, "tare_g", where, 0, max_g), max_g, tuple(suits))

    def get(self, code: str) -> Box | None:
        return self.boxes.get(code)
