"""Platform documents: the gateway checks them with the platform's public
key and cannot make them; forged, changed, misdirected, stale or malformed
documents are refused with a reason."""

from __future__ import annotations

import json

import pytest

from common import platform_docs as sd
from common.box_catalogue import Catalogue
from common.tariff import Tariff
from protocol.canonical import dumps
from tests.gateway.counter.platform_rig import KEYS, PLATFORM, ROGUE, catalogue_doc, tariff_doc

PUB = sd.load_public_keys(KEYS)


def test_a_platform_catalogue_and_tariff_verify_and_parse() -> None:
    cat = Catalogue(sd.verify(dumps(catalogue_doc()), PUB, "box_catalogue", "o1"))
    assert cat.get("PE-BOX-E30") is not None and cat.get("PE-BOX-E30").max_g == 3000  # type: ignore[union-attr]
    t = Tariff(sd.verify(tariff_doc(), PUB, "tariff", "o9"))  # "*": every outlet
    assert t.doc.cite()["version"] == 1 and len(t.doc.digest) == 64


def test_a_key_the_gateway_does_not_hold_signs_nothing_it_accepts() -> None:
    forged = catalogue_doc(key=ROGUE)
    with pytest.raises(sd.DocError) as e:
        sd.verify(forged, PUB, "box_catalogue", "o1")
    assert e.value.reason == "bad_signature"


@pytest.mark.parametrize("change", [
    lambda d: d["body"]["boxes"][0].__setitem__("max_g", 99000),  # a heavier limit
    lambda d: d.__setitem__("version", 99),
    lambda d: d.__setitem__("outlets", ["*"]),
    lambda d: d.__setitem__("kind", "tariff"),
    lambda d: d.__setitem__("sig", d["sig"][:-1] + ("0" if d["sig"][-1] != "0" else "1")),
    lambda d: d.__setitem__("sig", d["sig"].upper()),
])
def test_any_change_to_a_signed_document_is_refused(change) -> None:  # type: ignore[no-untyped-def]
    d = catalogue_doc()
    change(d)
    with pytest.raises(sd.DocError) as e:
        sd.verify(d, PUB, "box_catalogue", "o1")
    assert e.value.reason in ("bad_signature", "wrong_kind")


def test_a_tariff_signed_by_the_platform_cannot_pose_as_a_catalogue_or_go_to_another_outlet() -> None:
    with pytest.raises(sd.DocError) as e:
        sd.verify(tariff_doc(), PUB, "box_catalogue", "o1")
    assert e.value.reason == "wrong_kind"
    with pytest.raises(sd.DocError) as e:
        sd.verify(catalogue_doc(outlets=["o2"]), PUB, "box_catalogue", "o1")
    assert e.value.reason == "wrong_outlet"


def test_versions_only_grow() -> None:
    v2 = sd.verify(catalogue_doc(version=2), PUB, "box_catalogue", "o1")
    v1 = sd.verify(catalogue_doc(version=1), PUB, "box_catalogue", "o1")
    assert sd.newer(None, v1) is v1 and sd.newer(v1, v2) is v2
    with pytest.raises(sd.DocError) as e:
        sd.newer(v2, v1)
    assert e.value.reason == "stale_version"


@pytest.mark.parametrize("data,reason", [
    (b"", "malformed"), (b"[]", "malformed"), (b"{", "malformed"), (b"\xff\xfe", "malformed"),
    (b"{}", "missing_field"), (b"x" * (sd.MAX_DOC + 1), "oversized"),
    (b"[" * 30000 + b"]" * 30000, "malformed"), (b'{"a":' * 10000 + b"1" + b"}" * 10000, "malformed"),
    (json.dumps({"v": 1, "kind": "box_catalogue", "version": 1.5, "outlets": ["o1"], "iat": 1, "kid": "p1",
                 "body": {}, "sig": "0" * 128}).encode(), "malformed"),  # floats refused before anything
    (json.dumps({"v": 1, "kind": "box_catalogue", "version": 1, "outlets": ["o1"], "iat": 1, "kid": "zz",
                 "body": {}, "sig": "0" * 128}).encode(), "unknown_key"),
    (json.dumps({"v": 1, "kind": "box_catalogue", "version": 1, "outlets": ["o1"], "iat": 1, "kid": "p1",
                 "body": {}, "sig": "zz" * 64}).encode(), "bad_signature"),
])
def test_malformed_documents_get_a_reason_and_never_raise_anything_else(data: bytes, reason: str) -> None:
    with pytest.raises(sd.DocError) as e:
        sd.verify(data, PUB, "box_catalogue", "o1")
    assert e.value.reason == reason


@pytest.mark.parametrize("boxes", [
    [], [{"code": "lower-case", "name": {"zh": "a", "en": "a"}, "l_mm": 1, "w_mm": 1, "h_mm": 1,
          "tare_g": 0, "max_g": 1, "suits": ["fruit"]}],
    [{"code": "A", "name": {"zh": "a", "en": "a"}, "l_mm": 1, "w_mm": 1, "h_mm": 1, "tare_g": 0,
      "max_g": 10**12, "suits": ["fruit"]}],
    [{"code": "A", "name": {"zh": "a"}, "l_mm": 1, "w_mm": 1, "h_mm": 1, "tare_g": 0, "max_g": 1,
      "suits": ["fruit"]}],
    [{"code": "A", "name": {"zh": "a", "en": "a"}, "l_mm": 1, "w_mm": 1, "h_mm": 1, "tare_g": 0, "max_g": 1,
      "suits": ["weapons"]}],
])
def test_a_signed_but_nonsensical_catalogue_is_refused(boxes: list) -> None:  # type: ignore[type-arg]
    doc = sd.verify(catalogue_doc(boxes=boxes), PUB, "box_catalogue", "o1")
    with pytest.raises(sd.DocError) as e:
        Catalogue(doc)
    assert e.value.reason == "bad_body"


def test_the_gateway_holds_only_public_keys() -> None:
    # The configured value is 32 bytes of public key: nothing in it signs.
    assert all(len(bytes.fromhex(h)) == 32 for h in KEYS.values())
    assert KEYS["p1"] != PLATFORM.private_bytes_raw().hex()
