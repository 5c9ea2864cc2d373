# Run on the MicroPython unix port by tests/protocol/test_outbound.py: the
# outbound ids and body schemas behave as on CPython.
from protocol import outbound_bodies as B
from protocol.errors import ProtocolError
from protocol.outbound import bag_problem, make_bag, valid_order

assert make_bag(20261203001) == "BG202612030011", make_bag(20261203001)
assert bag_problem("BG202612030011") is None
assert bag_problem("BG202612030012") == "bag_check_digit"
assert bag_problem("BG20261203001") == "bag_format"
assert valid_order("SO20261203-0042") and not valid_order("RB123456785GB") and not valid_order("so-1")
B.check("handheld.bag_pickup", {"bag": "BG202612030011", "items": ["SO20261203-0042", "RB123456785GB"],
                                "courier": "c007"}, "handheld")
for body in ({"bag": "BG202612030011", "items": ["RB123456784GB"], "courier": "c007"},
             {"bag": "BG202612030011", "items": ["SO1-1", "SO1-1"], "courier": "c007"}):
    try:
        B.check("handheld.bag_pickup", body, "handheld")
        raise SystemExit("accepted %r" % (body,))
    except ProtocolError:
        pass
H = {"point": "vp-xiakou", "items": ["RB123456785GB"], "agent": "Chen", "confirm": "signature",
     "signature_sha256": "ab" * 32, "courier": "c007"}
B.check("handheld.point_handover", H, "handheld")
B.check("handheld.group_handover", {"group": "GO20261204-3", "point": "vp-xiakou", "shares": 3,
                                    "handed": [2, 3], "qty": 5, "agent": "Chen", "confirm": "token",
                                    "courier": "c007"}, "handheld")
for k, v in (("signature_sha256", "AB" * 32), ("items", ["RB123456785GB"] * 2), ("agent", "")):
    bad = dict(H)
    bad[k] = v
    try:
        B.check("handheld.point_handover", bad, "handheld")
        raise SystemExit("accepted %r" % (bad,))
    except ProtocolError:
        pass
print("OUTBOUND_MP_OK")
