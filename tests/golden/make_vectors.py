"""Write tests/golden/vectors.jsonl, the protocol's golden vectors.

Expected outputs are written by hand or computed with independent CPython
machinery (the stdlib ``hmac`` and ``json`` modules), never by the protocol
module under test. ``tests/protocol/test_golden.py`` checks that the committed file is
exactly what this script writes, so a vector cannot drift silently.

Run: .venv/bin/python tests/golden/make_vectors.py
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("vectors.jsonl")
KEY = "outlet-secret-k1"


def canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sig(cmd: dict[str, Any], key: str = KEY) -> str:
    body = {k: v for k, v in cmd.items() if k != "sig"}
    msg = b"pe/v1/cmd\n" + canon(body).encode()
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def signed(**fields: Any) -> dict[str, Any]:
    cmd = {"v": 1, "kv": 1, "args": {}, **fields}
    cmd["sig"] = sig(cmd)
    return cmd


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def err(code: str) -> dict[str, Any]:
    return {"err": code}


def verdict_ok(kind: str, value: str, **extra: Any) -> dict[str, Any]:
    return ok({"ok": True, "kind": kind, "value": value, **extra})


def verdict_bad(reason: str) -> dict[str, Any]:
    return ok({"ok": False, "reason": reason})


def cases() -> list[dict[str, Any]]:
    c: list[tuple[str, str, Any, dict[str, Any]]] = []
    add = c.append

    # --- topics
    add(
        (
            "topic build event",
            "topic.build",
            ["o-0451", "locker", "lk01", "evt"],
            ok("pe/v1/o-0451/locker/lk01/evt"),
        )
    )
    add(("topic build bad kind", "topic.build", ["o1", "fridge", "lk01", "evt"], err("bad_topic")))
    add(
        (
            "topic build upper device",
            "topic.build",
            ["o1", "locker", "LK01", "evt"],
            err("bad_topic"),
        )
    )
    add(
        (
            "topic build wildcard device",
            "topic.build",
            ["o1", "locker", "+", "evt"],
            err("bad_topic"),
        )
    )
    add(
        ("topic build 33 chars", "topic.build", ["o1", "locker", "a" * 33, "evt"], err("bad_topic"))
    )
    add(
        (
            "topic parse",
            "topic.parse",
            "pe/v1/o1/scanner/sc-2/ack",
            ok(["o1", "scanner", "sc-2", "ack"]),
        )
    )
    add(("topic parse foreign", "topic.parse", "$SYS/broker/uptime", err("unknown_topic")))
    add(("topic parse v2", "topic.parse", "pe/v2/o1/locker/lk01/evt", err("unknown_topic")))
    add(("topic parse short", "topic.parse", "pe/v1/o1/locker/lk01", err("unknown_topic")))
    add(
        (
            "topic parse extra level",
            "topic.parse",
            "pe/v1/o1/locker/lk01/evt/x",
            err("unknown_topic"),
        )
    )
    add(
        (
            "topic parse unknown channel",
            "topic.parse",
            "pe/v1/o1/locker/lk01/debug",
            err("unknown_topic"),
        )
    )
    add(("topic parse bad device", "topic.parse", "pe/v1/o1/locker/lk 01/evt", err("bad_topic")))
    add(("topic parse empty outlet", "topic.parse", "pe/v1//locker/lk01/evt", err("bad_topic")))

    # --- canonical JSON
    add(
        (
            "canon sorted compact",
            "canon",
            {"b": 1, "a": [True, None, "x"]},
            ok('{"a":[true,null,"x"],"b":1}'),
        )
    )
    add(
        (
            "canon unicode raw",
            "canon",
            {"收件人": "张三", "q": 'a"b\\c\n\t\u0001'},
            ok(canon({"收件人": "张三", "q": 'a"b\\c\n\t\u0001'})),
        )
    )
    add(
        (
            "canon negative and big",
            "canon",
            [-5, 0, 1795881163, 2**40],
            ok("[-5,0,1795881163,1099511627776]"),
        )
    )
    add(("canon float refused", "canon", {"t": 21.5}, err("bad_field")))
    # I-JSON's safe integers (RFC 7493): the largest and smallest pass, one more is refused.
    add(("canon max safe int", "canon", [2**53 - 1, -(2**53 - 1)],
         ok("[9007199254740991,-9007199254740991]")))
    add(("canon int over 2**53 refused", "canon", {"ts": 2**53}, err("bad_field")))
    add(("canon int under -2**53 refused", "canon", [-(2**53)], err("bad_field")))
    add(("canon too deep", "canon", [[[[[[[[[[1]]]]]]]]]], err("bad_field")))

    # --- event ids
    add(("id parse", "id.parse", "lk01:3fa2c0de:17", ok(["lk01", "3fa2c0de", 17])))
    add(("id parse zero seq", "id.parse", "lk01:3fa2c0de:0", err("bad_field")))
    add(("id parse leading zero", "id.parse", "lk01:3fa2c0de:017", err("bad_field")))
    add(("id parse short inc", "id.parse", "lk01:3fa2:17", err("bad_field")))
    add(("id parse upper inc", "id.parse", "lk01:3FA2C0DE:17", err("bad_field")))
    add(("id parse two parts", "id.parse", "lk01:17", err("bad_field")))
    add(("id parse superscript digit", "id.parse", "lk01:3fa2c0de:²", err("bad_field")))
    add(("id parse arabic-indic digits", "id.parse", "lk01:3fa2c0de:١٧", err("bad_field")))
    add(("id parse negative", "id.parse", "lk01:3fa2c0de:-1", err("bad_field")))

    # --- envelopes
    env = {
        "v": 1,
        "id": "lk01:3fa2c0de:17",
        "ts": 1795881163,
        "type": "locker.deposit",
        "cls": "custody",
        "boot": 4,
        "body": {"parcel": "RB123456785GB", "door": 3, "note": "已投递"},
    }
    add(("envelope encode", "env.encode", env, ok(canon(env))))
    add(("envelope decode", "env.decode", canon(env), ok(env)))
    add(("envelope decode spaced json", "env.decode", json.dumps(env), ok(env)))
    newer = dict(env, trace="abc")
    add(("envelope keeps unknown field", "env.decode", canon(newer), ok(newer)))
    for field in ("v", "id", "ts", "type", "cls", "body"):
        missing = {k: v for k, v in env.items() if k != field}
        add((f"envelope missing {field}", "env.decode", canon(missing), err("missing_field")))
    add(("envelope v2", "env.decode", canon(dict(env, v=2)), err("bad_version")))
    add(("envelope v string", "env.decode", canon(dict(env, v="1")), err("bad_field")))
    add(("envelope bad cls", "env.decode", canon(dict(env, cls="gossip")), err("bad_field")))
    add(
        (
            "envelope bad type",
            "env.decode",
            canon(dict(env, type="Locker Deposit")),
            err("bad_field"),
        )
    )
    add(("envelope negative ts", "env.decode", canon(dict(env, ts=-1)), err("bad_field")))
    add(("envelope bool ts", "env.decode", canon(dict(env, ts=True)), err("bad_field")))
    add(("envelope huge ts", "env.decode", canon(dict(env, ts=10**20)), err("bad_field")))
    add(("envelope ts 2**53", "env.decode", canon(dict(env, ts=2**53)), err("bad_field")))
    add(("envelope huge int in body", "env.decode", canon(dict(env, body={"door": -(2**64)})),
         err("bad_field")))
    add(("envelope huge int deep in body", "env.decode",
         canon(dict(env, body={"a": [{"b": [2**63]}]})), err("bad_field")))
    add(("envelope body list", "env.decode", canon(dict(env, body=[1])), err("bad_field")))
    add(("envelope bad id", "env.decode", canon(dict(env, id="lk01-17")), err("bad_field")))
    add(
        (
            "envelope float in body",
            "env.decode",
            canon(dict(env, body={"t": 21.5})),
            err("bad_field"),
        )
    )
    raw = canon(env)
    add(("envelope lone surrogate escape", "env.decode", raw.replace("已投递", "\\ud800"), err("bad_field")))
    add(("envelope escaped surrogate pair", "env.decode", raw.replace("已投递", "\\ud83d\\ude00"),
         err("bad_field")))
    add(("envelope escaped backslash then u", "env.decode", raw.replace("已投递", "\\\\ud800"),
         ok(dict(env, body=dict(env["body"], note="\\ud800")))))
    add(("envelope raw emoji", "env.decode", raw.replace("已投递", "📦"),
         ok(dict(env, body=dict(env["body"], note="📦")))))
    add(("envelope BMP escape", "env.decode", raw.replace("已投递", "\\u5df2"),
         ok(dict(env, body=dict(env["body"], note="已")))))
    add(("envelope not json", "env.decode", '{"v":1,"id":', err("malformed")))
    add(("envelope json array", "env.decode", "[1,2,3]", err("malformed")))
    add(("envelope json string", "env.decode", '"hello"', err("malformed")))
    add(("envelope empty", "env.decode", "", err("malformed")))
    add(("envelope not utf8", "env.decode", {"hex": "7b2276223aff7d"}, err("malformed")))
    add(("envelope binary garbage", "env.decode", {"hex": "00ff13377e0000"}, err("malformed")))
    big = dict(env, body={"pad": "x" * 4100})
    add(("envelope oversized", "env.decode", canon(big), err("oversized")))
    add(("envelope encode oversized", "env.encode", big, err("oversized")))
    add(("envelope encode float", "env.encode", dict(env, body={"t": 0.5}), err("bad_field")))

    # --- HMAC-SHA256, RFC 4231 test cases 1, 2 and 6
    rfc = [
        ("0b" * 20, b"Hi There".hex()),
        (b"Jefe".hex(), b"what do ya want for nothing?".hex()),
        ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex()),
    ]
    for n, (k, m) in enumerate(rfc):
        mac = hmac.new(bytes.fromhex(k), bytes.fromhex(m), hashlib.sha256).hexdigest()
        add((f"hmac rfc4231 #{n}", "hmac", {"key": k, "msg": m}, ok(mac)))

    # --- commands
    now = 1795881200
    cmd = {
        "v": 1,
        "id": "c-0001",
        "dev": "lk01",
        "op": "open",
        "args": {"door": 3},
        "iat": now - 100,
        "exp": now + 200,
        "kv": 1,
    }
    add(("command sign", "cmd.sign", {"cmd": cmd, "key": KEY}, ok(sig(cmd))))
    good = signed(
        id="c-0001", dev="lk01", op="open", args={"door": 3}, iat=now - 100, exp=now + 200
    )
    keys = {"1": KEY}

    def verify(name: str, payload: Any, expect: dict[str, Any], **extra: Any) -> None:
        add(
            (
                name,
                "cmd.verify",
                {"payload": payload, "keys": keys, "dev": "lk01", "now": now, **extra},
                expect,
            )
        )

    verify("command verify good", canon(good), ok("c-0001"))
    verify("command verify spaced json", json.dumps(good, indent=1), ok("c-0001"))
    tampered = dict(good, args={"door": 4})
    verify("command tampered args", canon(tampered), err("bad_signature"))
    verify("command wrong key", canon(dict(good, sig=sig(good, "other-key"))), err("bad_signature"))
    verify("command sig not hex", canon(dict(good, sig="z" * 64)), err("bad_signature"))
    verify("command sig uppercase", canon(dict(good, sig=good["sig"].upper())), err("bad_signature"))
    verify("command lone surrogate", canon(good).replace('"door"', '"\\udc00door"'), err("bad_field"))
    verify("command sig short", canon(dict(good, sig="ab")), err("bad_signature"))
    verify(
        "command unknown kv",
        canon(signed(**{**{k: v for k, v in good.items() if k != "sig"}, "kv": 9})),
        err("unknown_key"),
    )
    other = signed(id="c-0002", dev="lk02", op="open", args={}, iat=now - 10, exp=now + 10)
    verify("command for another device", canon(other), err("wrong_device"))
    expired = signed(id="c-0003", dev="lk01", op="open", args={}, iat=now - 600, exp=now - 1)
    verify("command expired", canon(expired), err("expired"))
    at_exp = signed(id="c-0004", dev="lk01", op="open", args={}, iat=now - 600, exp=now)
    verify("command at expiry", canon(at_exp), err("expired"))
    future = signed(id="c-0005", dev="lk01", op="open", args={}, iat=now + 3600, exp=now + 7200)
    verify("command from the future", canon(future), err("not_yet_valid"))
    skewed = signed(id="c-0006", dev="lk01", op="open", args={}, iat=now + 200, exp=now + 400)
    verify("command within clock skew", canon(skewed), ok("c-0006"))
    forever = signed(id="c-0007", dev="lk01", op="open", args={}, iat=now, exp=now + 8 * 86400)
    verify("command lifetime too long", canon(forever), err("bad_field"))
    backwards = signed(id="c-0008", dev="lk01", op="open", args={}, iat=now, exp=now - 5)
    verify("command exp before iat", canon(backwards), err("bad_field"))
    verify("command replayed", canon(good), err("replayed"), before=[canon(good)])
    second = signed(id="c-0009", dev="lk01", op="open", args={"door": 1}, iat=now - 5, exp=now + 50)
    verify("command after another", canon(second), ok("c-0009"), before=[canon(good)])
    # Capacity 1: c-0009 evicts c-0001 (earlier expiry), whose replay is then
    # refused by the floor rather than accepted.
    verify(
        "command replay after eviction",
        canon(good),
        err("replayed"),
        before=[canon(good), canon(second)],
        capacity=1,
    )
    nosig = {k: v for k, v in good.items() if k != "sig"}
    verify("command unsigned", canon(nosig), err("missing_field"))
    noexp = {k: v for k, v in good.items() if k != "exp"}
    verify("command without exp", canon(noexp), err("missing_field"))
    verify("command not json", "open door 3", err("malformed"))
    verify("command json list", "[]", err("malformed"))
    verify("command oversized", canon(dict(good, args={"pad": "x" * 2100})), err("oversized"))
    verify("command garbage bytes", {"hex": "ff00fe7b7d"}, err("malformed"))
    add(
        (
            "command ack",
            "cmd.ack",
            {"id": "c-0001", "ts": now},
            ok(canon({"v": 1, "id": "c-0001", "ts": now, "ok": True, "code": "ok"})),
        )
    )

    # --- UPU S10
    add(
        (
            "s10 spec example",
            "barcode.s10",
            "RB123456785GB",
            verdict_ok("s10", "RB123456785GB", service="RB", country="GB"),
        )
    )
    add(
        (
            "s10 china ems",
            "barcode.s10",
            "EA123456785CN",
            verdict_ok("s10", "EA123456785CN", service="EA", country="CN"),
        )
    )
    # serial 00000027: S = 2*9 + 7*7 = 67, 67 mod 11 = 1, C = 10 -> 0
    add(
        (
            "s10 check 10 maps to 0",
            "barcode.s10",
            "CP000000270CN",
            verdict_ok("s10", "CP000000270CN", service="CP", country="CN"),
        )
    )
    # serial 00000000: S = 0, C = 11 -> 5
    add(
        (
            "s10 check 11 maps to 5",
            "barcode.s10",
            "LX000000005CN",
            verdict_ok("s10", "LX000000005CN", service="LX", country="CN"),
        )
    )
    add(("s10 bad check digit", "barcode.s10", "RB123456784GB", verdict_bad("s10_check_digit")))
    add(("s10 unknown country", "barcode.s10", "RB123456785ZZ", verdict_bad("s10_country")))
    add(("s10 lowercase", "barcode.s10", "rb123456785gb", verdict_bad("s10_format")))
    add(("s10 too short", "barcode.s10", "RB12345678GB", verdict_bad("s10_format")))
    add(("s10 letter in serial", "barcode.s10", "RB12345A785GB", verdict_bad("s10_format")))

    # --- EAN / UPC
    add(("ean13", "barcode.ean", "4006381333931", verdict_ok("ean13", "4006381333931")))
    add(
        ("ean13 china prefix", "barcode.ean", "6901234567892", verdict_ok("ean13", "6901234567892"))
    )
    add(("ean13 bad check", "barcode.ean", "4006381333932", verdict_bad("ean_check_digit")))
    add(("ean8", "barcode.ean", "96385074", verdict_ok("ean8", "96385074")))
    add(("ean8 bad check", "barcode.ean", "96385075", verdict_bad("ean_check_digit")))
    add(("upca", "barcode.ean", "036000291452", verdict_ok("upca", "036000291452")))
    add(("upca bad check", "barcode.ean", "036000291453", verdict_bad("ean_check_digit")))
    add(("ean 10 digits", "barcode.ean", "1234567890", verdict_bad("ean_format")))
    add(("ean letters", "barcode.ean", "40063813339A", verdict_bad("ean_format")))

    # --- GS1
    add(
        (
            "gs1 sscc bracketed",
            "barcode.gs1",
            "(00)106141412345678908",
            verdict_ok("sscc", "106141412345678908", ais={"00": "106141412345678908"}),
        )
    )
    add(
        (
            "gs1 sscc bad check",
            "barcode.gs1",
            "(00)106141412345678907",
            verdict_bad("gs1_check_digit"),
        )
    )
    add(
        (
            "gs1 gtin with batch",
            "barcode.gs1",
            "(01)09506000134352(10)ABC123",
            verdict_ok("gtin", "09506000134352", ais={"01": "09506000134352", "10": "ABC123"}),
        )
    )
    add(
        (
            "gs1 raw fnc1",
            "barcode.gs1",
            "010950600013435210ABC123\x1d17261231",
            verdict_ok(
                "gtin",
                "09506000134352",
                ais={"01": "09506000134352", "10": "ABC123", "17": "261231"},
            ),
        )
    )
    add(("gs1 gtin bad check", "barcode.gs1", "(01)09506000134353", verdict_bad("gs1_check_digit")))
    add(("gs1 sscc short", "barcode.gs1", "(00)10614141234567890", verdict_bad("gs1_length")))
    add(("gs1 unknown ai", "barcode.gs1", "(89)ABC", verdict_bad("gs1_unknown_ai")))
    add(("gs1 raw unknown ai", "barcode.gs1", "89ABC", verdict_bad("gs1_unknown_ai")))
    add(("gs1 company internal ai", "barcode.gs1", "99ABC", verdict_ok("gs1", "99ABC", ais={"99": "ABC"})))
    add(("gs1 unclosed", "barcode.gs1", "(01", verdict_bad("gs1_format")))
    add(
        (
            "gs1 repeated ai",
            "barcode.gs1",
            "(01)09506000134352(01)95012345678903",
            verdict_bad("gs1_format"),
        )
    )
    add(
        (
            "gs1 repeated ai same value",
            "barcode.gs1",
            "(01)09506000134352(01)09506000134352",
            verdict_ok("gtin", "09506000134352", ais={"01": "09506000134352"}),
        )
    )
    # Real dates, numeric and character-set checks, the AI table, and
    # an invalid element that costs only itself.
    add(("gs1 month 31", "barcode.gs1", "(17)533110", verdict_bad("gs1_date")))
    add(("gs1 month 00", "barcode.gs1", "(17)280071", verdict_bad("gs1_date")))
    add(("gs1 day 00 end of month", "barcode.gs1", "(17)280200", verdict_ok("gs1", "(17)280200", ais={"17": "280200"})))
    add(("gs1 count not digits", "barcode.gs1", "(37)1A", verdict_bad("gs1_format")))
    add(("gs1 outside cset 82", "barcode.gs1", "(10)AB CD", verdict_bad("gs1_charset")))
    add(
        (
            "gs1 sscc with gross weight",
            "barcode.gs1",
            "(00)106141412345678908(3302)001234",
            verdict_ok("sscc", "106141412345678908", ais={"00": "106141412345678908", "3302": "001234"}),
        )
    )
    add(
        (
            "gs1 bad elements kept apart",
            "barcode.gs1",
            "(00)106141412345678908(8999)X(17)533110",
            verdict_ok("sscc", "106141412345678908", ais={"00": "106141412345678908"}, problems=[
                {"ai": "8999", "reason": "gs1_unknown_ai", "detail": "unknown application identifier (8999)"},
                {"ai": "17", "reason": "gs1_date", "detail": "(17) 533110 is not a real date"},
            ]),
        )
    )
    add(
        (
            "gs1 raw logistics label",
            "barcode.gs1",
            "00106141412345678908" "3302001234" "420100000\x1d" "4307CN\x1d" "402" "12345678901234560",
            verdict_ok("sscc", "106141412345678908", ais={
                "00": "106141412345678908", "3302": "001234", "420": "100000", "4307": "CN",
                "402": "12345678901234560"}),
        )
    )

    # --- China Post domestic
    add(
        (
            "cn ems",
            "barcode.cn",
            "1012345678901",
            verdict_ok("cn_ems", "1012345678901", check="none"),
        )
    )
    add(
        (
            "cn parcel",
            "barcode.cn",
            "9876543210123",
            verdict_ok("cn_parcel", "9876543210123", check="none"),
        )
    )
    add(("cn wrong prefix", "barcode.cn", "3012345678901", verdict_bad("cn_format")))
    add(("cn isbn", "barcode.cn", "9780471117094", verdict_bad("cn_format")))
    add(("cn 12 digits", "barcode.cn", "101234567890", verdict_bad("cn_format")))

    # --- AIM identifiers and classification as scanned
    add(
        (
            "aim code128",
            "aim.parse",
            "]C0RB123456785GB",
            ok(["code128", "0", "RB123456785GB", False]),
        )
    )
    add(
        (
            "aim gs1-128",
            "aim.parse",
            "]C100106141412345678908",
            ok(["code128", "1", "00106141412345678908", True]),
        )
    )
    add(("aim ean13", "aim.parse", "]E04006381333931", ok(["ean13", "0", "4006381333931", False])))
    add(("aim ean8", "aim.parse", "]E496385074", ok(["ean8", "4", "96385074", False])))
    add(
        (
            "aim qr",
            "aim.parse",
            "]Q1https://post.example/c/42",
            ok(["qr", "1", "https://post.example/c/42", False]),
        )
    )
    add(
        (
            "aim gs1 datamatrix",
            "aim.parse",
            "]d20109506000134352",
            ok(["datamatrix", "2", "0109506000134352", True]),
        )
    )
    add(("aim none", "aim.parse", "RB123456785GB", ok([None, None, "RB123456785GB", False])))
    add(("aim gs1 datamatrix eci", "aim.parse", "]d5010", ok(["datamatrix", "5", "010", True])))
    add(("aim gs1 qr eci", "aim.parse", "]Q4010", ok(["qr", "4", "010", True])))
    add(("aim gs1 aztec eci", "aim.parse", "]z4010", ok(["aztec", "4", "010", True])))
    add(("aim ean with add-on", "aim.parse", "]E397804711170949", ok(["ean_upc", "3", "97804711170949", False])))
    add(("aim unknown letter", "aim.parse", "]Y0abc", ok(["aim_Y", "0", "abc", False])))
    add(("aim too short", "aim.parse", "]C", ok([None, None, "]C", False])))
    add(
        (
            "classify s10 code128",
            "barcode.classify",
            "]C0RB123456785GB",
            verdict_ok("s10", "RB123456785GB", service="RB", country="GB", symbology="code128"),
        )
    )
    add(
        (
            "classify s10 with CR",
            "barcode.classify",
            "RB123456785GB\r\n",
            verdict_ok("s10", "RB123456785GB", service="RB", country="GB"),
        )
    )
    add(
        (
            "classify 13 digits in ean13 symbol",
            "barcode.classify",
            "]E09876543210128",
            verdict_ok("ean13", "9876543210128", symbology="ean13"),
        )
    )
    add(
        (
            "classify 13 digits in code128",
            "barcode.classify",
            "]C09876543210128",
            verdict_ok("cn_parcel", "9876543210128", check="none", symbology="code128"),
        )
    )
    add(
        (
            "classify gs1-128 sscc",
            "barcode.classify",
            "]C100106141412345678908",
            verdict_ok(
                "sscc", "106141412345678908", ais={"00": "106141412345678908"}, symbology="code128"
            ),
        )
    )
    add(("classify upca", "barcode.classify", "036000291452", verdict_ok("upca", "036000291452")))
    add(("classify bare domestic digits", "barcode.classify", "1012345678901", verdict_bad("cn_symbology")))
    add(("classify bare isbn", "barcode.classify", "9780471117094", verdict_ok("ean13", "9780471117094")))
    add(
        (
            "classify isbn in code128",
            "barcode.classify",
            "]C09780471117094",
            verdict_ok("ean13", "9780471117094", symbology="code128"),
        )
    )
    add(
        (
            "classify ean13 with add-on",
            "barcode.classify",
            "]E3978047111709490000",
            verdict_ok("ean13", "9780471117094", addon="90000", symbology="ean_upc"),
        )
    )
    add(
        (
            "classify upc-e under e0",
            "barcode.classify",
            "]E001234565",
            verdict_ok("upce", "01234565", upca="012345000065", symbology="ean13"),
        )
    )
    add(
        (
            "classify gs1 with scanner suffix",
            "barcode.classify",
            "]C100106141412345678908\r\n",
            verdict_ok("sscc", "106141412345678908", ais={"00": "106141412345678908"}, symbology="code128"),
        )
    )
    add(
        (
            "classify dmre gs1",
            "barcode.classify",
            "]d800106141412345678908",
            verdict_ok("sscc", "106141412345678908", ais={"00": "106141412345678908"}, symbology="datamatrix"),
        )
    )
    add(
        (
            "classify text",
            "barcode.classify",
            "]Q1hello",
            ok({"ok": False, "reason": "unrecognised", "symbology": "qr"}),
        )
    )
    add(("classify empty", "barcode.classify", "", verdict_bad("empty")))
    add(("classify only aim", "barcode.classify", "]C0", verdict_bad("empty")))
    add(
        (
            "classify control chars",
            "barcode.classify",
            "RB1234\x0056785GB",
            verdict_bad("bad_chars"),
        )
    )
    add(("classify bad s10", "barcode.classify", "RB123456784GB", verdict_bad("s10_check_digit")))
    keys_vectors(add)
    seal_vectors(add)
    outbound_vectors(add)
    return [{"name": n, "fn": f, "in": i, "expect": e} for n, f, i, e in c]


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 on the stdlib's hmac, independent of protocol/keys.py."""
    prk = hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + t, i + 1
    return out[:length]


def device_key(master: bytes, device_id: str, version: int) -> bytes:
    return hkdf(master, b"pe/v1/device-key", b"pe/v1/device-key\n" + device_id.encode() + b"\n"
                + str(version).encode(), 32)


MASTER = bytes(range(32))


def keys_vectors(add: Any) -> None:
    # --- HKDF-SHA256: RFC 5869 test cases 1 and 3, OKM copied from the RFC
    rfc1 = ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    rfc3 = ("0b" * 22, "", "", 42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    for name, (ikm, salt, info, n, okm) in (("hkdf rfc5869 case 1", rfc1), ("hkdf rfc5869 case 3", rfc3)):
        assert hkdf(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), n).hex() == okm
        add((name, "hkdf", {"ikm": ikm, "salt": salt, "info": info, "len": n}, ok(okm)))
    # --- device keys: one per device and version, from the platform's master
    for dev, kv in (("o1/lk01", 1), ("o1/lk01", 2), ("o1/lk02", 1), ("o1/hh01", 1), ("o2/lk01", 1)):
        add((f"device key {dev} v{kv}", "device_key", {"master": MASTER.hex(), "dev": dev, "kv": kv},
             ok(device_key(MASTER, dev, kv).hex())))
    add(("device key bad id", "device_key", {"master": MASTER.hex(), "dev": "o1/lk01/x", "kv": 1},
         err("bad_field")))
    add(("device key version 0", "device_key", {"master": MASTER.hex(), "dev": "o1/lk01", "kv": 0},
         err("bad_field")))
    add(("device key short master", "device_key", {"master": "00" * 8, "dev": "o1/lk01", "kv": 1},
         err("bad_field")))
    # --- a device's keyring: the current version, the previous one in grace
    now = 1795881200
    k1, k2 = device_key(MASTER, "o1/lk01", 1), device_key(MASTER, "o1/lk01", 2)
    ring = {"kv": 2, "secret": k2.hex(), "prev": {"kv": 1, "secret": k1.hex(), "until": now + 60}}

    def cmd_kv(cid: str, kv: int, key: bytes) -> str:
        c = {"v": 1, "id": cid, "dev": "lk01", "op": "open", "args": {}, "iat": now - 10,
             "exp": now + 100, "kv": kv}
        body = b"pe/v1/cmd\n" + canon(c).encode()
        c["sig"] = hmac.new(key, body, hashlib.sha256).hexdigest()
        return canon(c)

    for name, payload, t, expect in (
        ("keyring current version", cmd_kv("r-1", 2, k2), now, ok("r-1")),
        ("keyring previous version in grace", cmd_kv("r-2", 1, k1), now + 59, ok("r-2")),
        ("keyring previous version after grace", cmd_kv("r-3", 1, k1), now + 60, err("retired_key")),
        ("keyring unknown version", cmd_kv("r-4", 3, k2), now, err("unknown_key")),
        ("keyring kv with the other version's key", cmd_kv("r-5", 2, k1), now, err("bad_signature")),
        ("keyring another device's key", cmd_kv("r-6", 2, device_key(MASTER, "o1/hh01", 2)), now,
         err("bad_signature")),
    ):
        add((name, "ring.verify", {"payload": payload, "ring": ring, "dev": "lk01", "now": t}, expect))
    add(("keyring config bad secret", "ring.verify",
         {"payload": cmd_kv("r-7", 2, k2), "ring": {"kv": 2, "secret": "zz"}, "dev": "lk01", "now": now},
         err("bad_field")))
    # --- permits: bound to one locker, parcel, courier, handheld; short-lived
    permit = {"v": 1, "id": "p-1", "dev": "lk01", "op": "deposit", "kv": 1, "sig": "0" * 64,
              "args": {"parcel": "RB123456785GB", "courier": "c007", "handheld": "hh01", "size": "M"},
              "iat": now, "exp": now + 3600}
    fwd = "permit.forward"
    add(("permit deposit forwardable", fwd, {"cmd": permit, "kind": "locker", "via": "hh01"}, ok("p-1")))
    add(("permit retrieve forwardable", fwd, {"cmd": dict(permit, op="retrieve"), "kind": "locker",
                                              "via": "hh01"}, ok("p-1")))
    add(("permit open refused", fwd, {"cmd": dict(permit, op="open"), "kind": "locker", "via": "hh01"},
         err("not_a_permit")))
    for op in ("config", "credential", "provision_code"):
        add((f"permit {op} refused", fwd, {"cmd": dict(permit, op=op), "kind": "locker", "via": "hh01"},
             err("not_a_permit")))
    add(("permit other handheld", fwd, {"cmd": permit, "kind": "locker", "via": "hh02"}, err("not_a_permit")))
    add(("permit to a scanner", fwd, {"cmd": permit, "kind": "scanner", "via": "hh01"}, err("not_a_permit")))
    add(("permit without courier", fwd,
         {"cmd": dict(permit, args={"parcel": "RB123456785GB", "handheld": "hh01"}), "kind": "locker",
          "via": "hh01"}, err("not_a_permit")))
    add(("permit too long-lived", fwd, {"cmd": dict(permit, exp=now + 12 * 3600 + 1), "kind": "locker",
                                        "via": "hh01"}, err("not_a_permit")))
    add(("permit unsigned", fwd, {"cmd": {k: v for k, v in permit.items() if k != "sig"}, "kind": "locker",
                                  "via": "hh01"}, err("bad_field")))


def _lp(b: bytes) -> bytes:
    return str(len(b)).encode() + b":" + b


def seal_box(reader: str, key: bytes, kv: int, eid: str, parcel: str, code: str) -> str:
    """protocol/seal.py rebuilt on the `cryptography` package's AES-CTR and the
    stdlib's hmac (docs/security.md, "Sealed codes")."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def expand(label: bytes) -> bytes:
        return hmac.new(key, label + reader.encode() + b"\x01", hashlib.sha256).digest()

    enc, mac = expand(b"pe/v1/seal-enc\n"), expand(b"pe/v1/seal-mac\n")
    iv = hashlib.sha256(b"pe/v1/seal-iv\n" + _lp(reader.encode()) + _lp(eid.encode())).digest()[:12]
    ct = Cipher(algorithms.AES(enc), modes.CTR(iv + bytes(4))).encryptor().update(code.encode())
    msg = (b"pe/v1/sealed-code\n" + _lp(reader.encode()) + _lp(str(kv).encode()) + _lp(eid.encode())
           + _lp(parcel.encode()) + _lp(ct))
    return (ct + hmac.new(mac, msg, hashlib.sha256).digest()[:16]).hex()


def seal_vectors(add: Any) -> None:
    eid, parcel = "lk01:0badc0de:17", "RB123456785GB"
    lk01 = device_key(MASTER, "o1/lk01", 1)
    notifier = hkdf(MASTER, b"pe/v1/notifier-key", b"pe/v1/notifier-key\no1\n1", 32)
    lk01_notify = hmac.new(notifier, b"pe/v1/notifier-seal\nlk01\x01", hashlib.sha256).digest()
    add(("notifier key o1 v1", "notifier_key", {"master": MASTER.hex(), "outlet": "o1", "kv": 1},
         ok(notifier.hex())))
    add(("locker notify key lk01", "locker_notify_key", {"notifier": notifier.hex(), "dev": "lk01"},
         ok(lk01_notify.hex())))
    plat = seal_box("platform", lk01, 1, eid, parcel, "042917")
    note = seal_box("notifier", lk01_notify, 1, eid, parcel, "042917")
    add(("seal platform", "seal", {"reader": "platform", "key": lk01.hex(), "kv": 1, "eid": eid,
                                   "parcel": parcel, "code": "042917"}, ok({"kv": 1, "box": plat})))
    add(("seal notifier", "seal", {"reader": "notifier", "key": lk01_notify.hex(), "kv": 1, "eid": eid,
                                   "parcel": parcel, "code": "042917"}, ok({"kv": 1, "box": note})))
    add(("seal unknown reader", "seal", {"reader": "gateway", "key": lk01.hex(), "kv": 1, "eid": eid,
                                         "parcel": parcel, "code": "042917"}, err("bad_field")))

    def event(box: dict[str, Any], eid: str = eid, parcel: str = parcel) -> dict[str, Any]:
        return {"id": eid, "body": {"parcel": parcel, "code_sealed": box}}

    boxes = {"platform": {"kv": 1, "box": plat}, "notifier": {"kv": 1, "box": note}}
    add(("open platform", "seal.open", {"reader": "platform", "key": lk01.hex(), "event": event(boxes)},
         ok("042917")))
    add(("open notifier", "seal.open", {"reader": "notifier", "key": lk01_notify.hex(),
                                        "event": event(boxes)}, ok("042917")))
    lk02 = device_key(MASTER, "o1/lk02", 1)
    flipped = plat[:3] + ("0" if plat[3] != "0" else "1") + plat[4:]
    bad = (
        ("open with another locker's key", "platform", lk02, event(boxes)),
        ("open platform box with the notify key", "platform", lk01_notify, event(boxes)),
        ("open a flipped box", "platform", lk01, event({"platform": {"kv": 1, "box": flipped}})),
        ("open a box moved to another event", "platform", lk01, event(boxes, eid="lk01:0badc0de:18")),
        ("open a box moved to another parcel", "platform", lk01, event(boxes, parcel="CP000000270CN")),
        ("open a box with another kv", "platform", lk01, event({"platform": {"kv": 2, "box": plat}})),
        ("open the notifier box as the platform", "platform", lk01,
         event({"platform": {"kv": 1, "box": note}})),
        ("open a truncated box", "platform", lk01, event({"platform": {"kv": 1, "box": plat[:-2]}})),
        ("open no box", "notifier", lk01_notify, event({"platform": boxes["platform"]})),
        ("open a box that is not hex", "platform", lk01, event({"platform": {"kv": 1, "box": "zz" * 22}})),
    )
    for name, reader, key, ev in bad:
        add((name, "seal.open", {"reader": reader, "key": key.hex(), "event": ev}, err("bad_seal")))


def bag_id(serial: int) -> str:
    """A bag label rebuilt here: BG + 11 digits + GS1 mod-10 (protocol/outbound.py)."""
    d = f"{serial:011d}"
    total = sum(int(ch) * (3 if i % 2 == 0 else 1) for i, ch in enumerate(reversed(d)))
    return "BG" + d + str((10 - total % 10) % 10)


def outbound_vectors(add: Any) -> None:
    bag = bag_id(20261203001)
    add(("bag id", "outbound.bag", bag, ok(None)))
    add(("bag id check digit", "outbound.bag", bag[:-1] + str((int(bag[-1]) + 1) % 10), ok("bag_check_digit")))
    add(("bag id short", "outbound.bag", bag[:-1], ok("bag_format")))
    add(("bag id lowercase", "outbound.bag", bag.lower(), ok("bag_format")))
    drop = {"compartment": 2, "order": "SO20261203-0042", "size": "M", "booked": "M", "via": "keypad"}
    body = "outbound.body"
    add(("send dropoff", body, {"type": "locker.send_dropoff", "kind": "locker", "body": drop}, ok(True)))
    add(("send dropoff from a handheld", body, {"type": "locker.send_dropoff", "kind": "handheld",
                                                "body": drop}, err("bad_field")))
    add(("send dropoff with the code", body, {"type": "locker.send_dropoff", "kind": "locker",
                                              "body": dict(drop, code="418263")}, err("bad_field")))
    add(("send dropoff order is a parcel id", body, {"type": "locker.send_dropoff", "kind": "locker",
                                                     "body": dict(drop, order="RB123456785GB")}, err("bad_field")))
    add(("send dropoff without via", body, {"type": "locker.send_dropoff", "kind": "locker",
                                            "body": {k: v for k, v in drop.items() if k != "via"}},
         err("missing_field")))
    pickup = {"bag": bag, "items": ["SO20261203-0042", "RB123456785GB"], "courier": "c007"}
    add(("bag pickup", body, {"type": "handheld.bag_pickup", "kind": "handheld", "body": pickup}, ok(True)))
    add(("bag pickup item twice", body, {"type": "handheld.bag_pickup", "kind": "handheld",
                                         "body": dict(pickup, items=["RB123456785GB"] * 2)}, err("bad_field")))
    add(("bag pickup bad s10", body, {"type": "handheld.bag_pickup", "kind": "handheld",
                                      "body": dict(pickup, items=["RB123456784GB"])}, err("bad_field")))


def render() -> str:
    return "".join(json.dumps(case, ensure_ascii=False) + "\n" for case in cases())


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {len(cases())} vectors to {OUT}")
