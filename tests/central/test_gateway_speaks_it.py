"""The gateway's own uplink client (``gateway/uplink/https.py``) against the
embedded central service: what the contract suite checks by hand is what the
gateway really sends and understands."""

from __future__ import annotations

import ssl

from central.keys import KeyService
from common.uplink_codec import encode_batch
from gateway.uplink.https import HttpsTransport
from gateway.uplink.transport import TransportError
from tests.central.conftest import CentralUnderTest
from tests.central.test_contract import PW, events


def transport(c: CentralUnderTest, password: str = PW) -> HttpsTransport:
    ctx = ssl.create_default_context(cafile=str(c.ca))
    return HttpsTransport(c.url, "o1", ctx, 10.0, "o1", password)


def test_the_gateway_uploads_pulls_and_probes(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    t = transport(central)
    t.probe()
    rows = events("lk01", 20) + events("sc01", 5)
    batch = encode_batch("o1", "bulk", rows)
    ack = t.send(batch)
    assert ack.batch == batch.id and ack.all
    keys = KeyService("o1", bytes(32))
    cmd = keys.command("lk01", "open", {"compartment": 3}, "cmd-1", now=1795881163)
    cursor = central.push_command("o1", "locker", cmd)
    down = t.pull(0)
    assert down.cursor == cursor and [k for k, _ in down.commands] == ["locker"]
    assert t.pull(down.cursor).commands == []
    central.settle()
    assert central.count("o1") == 25
    t.close()


def test_a_wrong_password_is_an_error_the_syncer_reports(central: CentralUnderTest) -> None:
    central.add_outlet("o1", PW)
    t = transport(central, password="old")
    try:
        t.send(encode_batch("o1", "bulk", events("lk01", 2)))
    except TransportError as e:
        assert e.reason == "http_401" and not e.unreachable
    else:
        raise AssertionError("a refused login was taken for an ack")
    finally:
        t.close()
