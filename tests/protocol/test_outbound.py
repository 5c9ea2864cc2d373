"""Outbound ids (send and group orders, bag labels) and the outbound event
body schemas, on CPython and on the MicroPython unix port."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import barcodes
from protocol import outbound_bodies as B
from protocol.errors import BadField, MissingField
from protocol.outbound import bag_check_digit, bag_problem, make_bag, valid_order


def test_bag_ids_carry_a_gs1_check_digit_that_catches_every_single_digit_slip() -> None:
    bag = make_bag(20261203001)
    assert bag == "BG202612030011" and bag_problem(bag) is None
    # The same mod-10 as a GTIN: a GTIN's check digit over the same digits.
    assert bag_check_digit("20261203001") == str(barcodes.gs1_check_digit("20261203001"))
    for i in range(2, 14):
        for d in "0123456789":
            if d != bag[i]:
                assert bag_problem(bag[:i] + d + bag[i + 1:]) is not None
    for bad in ("", "BG", "bg202612030011", "BG20261203001", "BG2026120300111", "XX202612030011",
                "BG20261203001A", None, 202612030011):
        assert bag_problem(bad) == "bag_format"


def test_order_ids_never_look_like_parcel_ids() -> None:
    assert valid_order("SO20261203-0042") and valid_order("GO20261203-7")
    for bad in ("RB123456785GB", "9876543210128", "SO1", "so20261203-1", "-SO1", "SO20261203 1",
                "S" * 40 + "-", None, 7):
        assert not valid_order(bad)


def test_bodies_refuse_secrets_wrong_kinds_and_bad_values() -> None:
    good = {"compartment": 3, "order": "SO20261203-0042", "size": "M", "booked": "S", "via": "qr"}
    assert B.check("locker.send_dropoff", good, "locker") is good
    B.check("locker.door", {"anything": 1}, "locker")  # no schema here: passes
    with pytest.raises(BadField, match="clear"):
        B.check("locker.send_dropoff", dict(good, send_code="123456"), "locker")
    with pytest.raises(BadField, match="not an event a handheld sends"):
        B.check("locker.send_dropoff", good, "handheld")
    with pytest.raises(MissingField):
        B.check("locker.send_dropoff", {k: v for k, v in good.items() if k != "booked"})
    with pytest.raises(BadField):
        B.check("locker.send_dropoff", dict(good, compartment=0))
    with pytest.raises(BadField):
        B.check("handheld.bag_pickup", {"bag": make_bag(1), "items": ["SO1-1"] * (B.MAX_ITEMS + 1),
                                        "courier": "c007"})
    with pytest.raises(BadField):
        B.check("handheld.point_collect", {"point": "VP 1", "item": "SO1-1", "courier": "c007"})
    ok = {"group": "GO20261203-7", "point": "vp-xiakou", "shares": 2, "share": 2, "qty": 1,
          "confirm": "token", "courier": "c007"}
    B.check("handheld.group_handout", ok)
    for k, v in (("share", 3), ("qty", 0), ("confirm", "shout"), ("shares", True)):
        with pytest.raises(BadField):
            B.check("handheld.group_handout", dict(ok, **{k: v}))


def test_handover_bodies_name_the_agent_and_how_they_confirmed() -> None:
    sha = "ab" * 32
    ok = {"point": "vp-xiakou", "items": ["RB123456785GB", "SO20261203-0042"], "agent": "陈代办",
          "confirm": "token", "courier": "c007"}
    B.check("handheld.point_handover", ok, "handheld")
    B.check("handheld.point_handover", dict(ok, confirm="signature", signature_sha256=sha), "handheld")
    for k, v in (("items", []), ("items", ["RB123456785GB"] * 2), ("items", ["RB123456784GB"]),
                 ("items", "RB123456785GB"), ("agent", " "), ("agent", "x" * 41), ("confirm", "nod"),
                 ("point", "VP 1")):
        with pytest.raises(BadField):
            B.check("handheld.point_handover", dict(ok, **{k: v}), "handheld")
    with pytest.raises(MissingField):  # a signature names its JPEG
        B.check("handheld.point_handover", dict(ok, confirm="signature"), "handheld")
    with pytest.raises(BadField):
        B.check("handheld.point_handover", dict(ok, confirm="signature", signature_sha256=sha.upper()))
    with pytest.raises(BadField, match="clear"):  # the agent's code never travels
        B.check("handheld.point_handover", dict(ok, token="0123456789ABCDEF"))
    with pytest.raises(BadField, match="not an event a locker sends"):
        B.check("handheld.point_handover", ok, "locker")
    g = {"group": "GO20261204-3", "point": "vp-xiakou", "shares": 3, "handed": [2, 3], "qty": 5,
         "agent": "陈代办", "confirm": "token", "courier": "c007"}
    B.check("handheld.group_handover", g, "handheld")
    for k, v in (("handed", []), ("handed", [4]), ("handed", [2, 2]), ("handed", [True]), ("qty", 0),
                 ("group", "go-1"), ("shares", 501)):
        with pytest.raises(BadField):
            B.check("handheld.group_handover", dict(g, **{k: v}), "handheld")
    with pytest.raises(MissingField):
        B.check("handheld.group_handover", {k: v for k, v in g.items() if k != "agent"}, "handheld")


@pytest.mark.mpy
def test_outbound_on_the_micropython_unix_port() -> None:
    from simulator import unixport

    proc = unixport.run([str(Path(__file__).parent / "outbound_mp_check.py")], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "OUTBOUND_MP_OK", proc.stdout
