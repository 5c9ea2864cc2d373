"""A stand-in platform for the counter tests: an Ed25519 key, and the box
catalogue and tariff it signs for outlet ``o1``."""

from __future__ import annotations

import copy
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import platform_docs as signed_docs

PLATFORM = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ROGUE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = {"p1": signed_docs.public_hex(PLATFORM)}

BOXES: list[dict[str, Any]] = [
    {"code": "PE-BOX-F5", "name": {"zh": "水果箱 5 号", "en": "Fruit box 5"}, "l_mm": 400, "w_mm": 300,
     "h_mm": 250, "tare_g": 450, "max_g": 10000, "suits": ["fruit", "produce"]},
    {"code": "PE-BOX-E30", "name": {"zh": "鸡蛋箱 30 枚", "en": "Egg box, 30"}, "l_mm": 320, "w_mm": 220,
     "h_mm": 180, "tare_g": 300, "max_g": 3000, "suits": ["eggs", "fragile"]},
    {"code": "PE-BOX-D1", "name": {"zh": "文件封", "en": "Document envelope"}, "l_mm": 324, "w_mm": 229,
     "h_mm": 10, "tare_g": 20, "max_g": 500, "suits": ["documents"]},
]

RATES: dict[str, Any] = {
    "standard": {"bands": [{"up_to_g": 1000, "fen": {"z1": 800, "z2": 1000, "z3": 1200}},
                           {"up_to_g": 3000, "fen": {"z1": 1200, "z2": 1600, "z3": 2000}}],
                 "step_g": 1000, "step_fen": {"z1": 300, "z2": 500, "z3": 700}, "max_g": 40000},
    "charity": {"bands": [{"up_to_g": 1000, "fen": {"z1": 0, "z2": 300, "z3": 500}}],
                "step_g": 1000, "step_fen": {"z1": 100, "z2": 200, "z3": 300}, "max_g": 20000},
}
ZONES = {"default": "z3", "by_prefix": {"55": "z1", "52": "z1", "10": "z2", "20": "z2", "5501": "z2"}}


def catalogue_doc(version: int = 1, boxes: list[dict[str, Any]] | None = None,
                  outlets: list[str] | None = None,
                  key: Ed25519PrivateKey = PLATFORM) -> dict[str, Any]:
    doc = {"v": 1, "kind": "box_catalogue", "version": version, "outlets": outlets or ["o1"],
           "iat": 1795881100, "body": {"boxes": copy.deepcopy(BOXES if boxes is None else boxes)}}
    return signed_docs.sign(doc, key, "p1")


def tariff_doc(version: int = 1, rates: dict[str, Any] | None = None, zones: dict[str, Any] | None = None,
               key: Ed25519PrivateKey = PLATFORM) -> dict[str, Any]:
    doc = {"v": 1, "kind": "tariff", "version": version, "outlets": ["*"], "iat": 1795881100,
           "body": {"zones": copy.deepcopy(zones or ZONES), "services": copy.deepcopy(rates or RATES)}}
    return signed_docs.sign(doc, key, "p1")
