# Golden-vector runner shared by both interpreters: pytest imports run_case()
# on CPython; on the MicroPython unix port this file runs as a script, reads
# vectors.jsonl line by line (no whole file in a 128 KiB heap) and prints one
# JSON line {"name": ..., "out": ...} per case. pytest compares outputs
# against the expected values on CPython, so the comparison logic exists once.

import binascii
import json
import sys

from protocol import (
    aim,
    barcodes,
    canonical,
    envelope,
    ids,
    keys,
    outbound,
    outbound_bodies,
    permits,
    seal,
    signing,
    topics,
)
from protocol.errors import ProtocolError


def _verdict(v):
    out = {}
    for k in v:
        if k != "detail":
            out[k] = v[k]
    return out


def _payload(inp):
    if isinstance(inp, dict) and "hex" in inp:
        return binascii.unhexlify(inp["hex"])
    return inp.encode("utf-8")


def _keys(d):
    out = {}
    for k in d:
        out[int(k)] = d[k].encode()
    return out


def _ring_verify(inp):
    ring = keys.from_config(inp["ring"])
    return signing.verify(_payload(inp["payload"]), ring, inp["dev"], inp["now"])["id"]


def _hex(s):
    return binascii.unhexlify(s)


def _verify(inp):
    guard = signing.ReplayGuard(inp.get("capacity", 64))
    for earlier in inp.get("before", []):
        signing.verify(earlier.encode(), _keys(inp["keys"]), inp["dev"], inp["now"], guard)
    return signing.verify(
        _payload(inp["payload"]), _keys(inp["keys"]), inp["dev"], inp["now"], guard
    )["id"]


FUNCS = {
    "topic.build": lambda i: topics.build(i[0], i[1], i[2], i[3]),
    "topic.parse": lambda i: list(topics.parse(i)),
    "canon": lambda i: canonical.dumps(i).decode("utf-8"),
    "env.encode": lambda i: envelope.encode(i).decode("utf-8"),
    "env.decode": lambda i: envelope.decode(_payload(i)),
    "id.parse": lambda i: list(ids.parse_event_id(i)),
    "hmac": lambda i: binascii.hexlify(
        signing.hmac_sha256(binascii.unhexlify(i["key"]), binascii.unhexlify(i["msg"]))
    ).decode(),
    "cmd.sign": lambda i: signing.sign(i["cmd"], i["key"].encode())["sig"],
    "cmd.verify": _verify,
    "hkdf": lambda i: binascii.hexlify(
        keys.hkdf(_hex(i["ikm"]), _hex(i["salt"]), _hex(i["info"]), i["len"])
    ).decode(),
    "device_key": lambda i: binascii.hexlify(keys.device_key(_hex(i["master"]), i["dev"], i["kv"])).decode(),
    "ring.verify": _ring_verify,
    "notifier_key": lambda i: binascii.hexlify(
        seal.notifier_key(_hex(i["master"]), i["outlet"], i["kv"])
    ).decode(),
    "locker_notify_key": lambda i: binascii.hexlify(
        seal.locker_notify_key(_hex(i["notifier"]), i["dev"])
    ).decode(),
    "seal": lambda i: seal.seal(i["reader"], _hex(i["key"]), i["kv"], i["eid"], i["parcel"], i["code"]),
    "seal.open": lambda i: seal.open_box(i["reader"], _hex(i["key"]), i["event"]),
    "permit.forward": lambda i: permits.forwardable(i["cmd"], i["kind"], i["via"])["id"],
    "cmd.ack": lambda i: signing.ack(i["id"], i["ts"]).decode(),
    "barcode.classify": lambda i: _verdict(barcodes.classify(i)),
    "barcode.s10": lambda i: _verdict(barcodes.s10(i)),
    "barcode.ean": lambda i: _verdict(barcodes.ean(i)),
    "barcode.gs1": lambda i: _verdict(barcodes.gs1(i)),
    "barcode.cn": lambda i: _verdict(barcodes.cn_domestic(i)),
    "aim.parse": lambda i: list(aim.parse(i)),
    "outbound.bag": lambda i: outbound.bag_problem(i),
    "outbound.body": lambda i: outbound_bodies.check(i["type"], i["body"], i["kind"]) is i["body"],
}


def run_case(case):
    """Return {"ok": value} or {"err": error code} for one vector."""
    try:
        return {"ok": FUNCS[case["fn"]](case["in"])}
    except ProtocolError as e:
        return {"err": e.code}


def main(path):
    n = 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            case = json.loads(line)
            out = run_case(case)
            print(json.dumps({"name": case["name"], "out": out}))
            n += 1
    print(json.dumps({"done": n}))


if __name__ == "__main__":
    main(sys.argv[1])
