"""The broker fixture is a real Mosquitto whose ACL confines each device to
its own topics."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from gateway.broker import Mosquitto
from protocol import topics


def publish_v5(rec, topic: str, payload: bytes) -> int:
    """Publish QoS 1 over MQTT 5 and return the PUBACK reason code value."""
    done = threading.Event()
    codes: list[int] = []

    def on_publish(client, userdata, mid, rc, props) -> None:  # noqa: ANN001
        codes.append(rc.value)
        done.set()

    rec.client.on_publish = on_publish
    info = rec.client.publish(topic, payload, qos=1)
    assert info.rc == mqtt.MQTT_ERR_SUCCESS
    assert done.wait(10)
    return codes[0]


FORGED = [
    topics.build("o1", "locker", "lk02", "evt"),  # another device
    topics.build("o1", "scanner", "lk01", "evt"),  # its own name under another kind
    topics.build("o2", "locker", "lk01", "evt"),  # another outlet
    topics.build("o1", "locker", "lk01", "cmd"),  # a command to itself
]


@pytest.mark.parametrize("forged", FORGED)
def test_device_cannot_publish_as_another_device(connect, forged: str) -> None:
    gw = connect("gw-o1")
    gw.subscribe("pe/v1/#")
    # MQTT 5: Mosquitto answers the forged publish with 0x87 Not authorized
    # (and 2.0 then drops the connection of a client that tried).
    assert publish_v5(connect("lk01"), forged, b"forged") == 0x87
    own = topics.build("o1", "locker", "lk01", "evt")
    assert publish_v5(connect("lk01"), own, b"genuine") == 0x00
    assert gw.wait_for(lambda ms: any(m.payload == b"genuine" for m in ms))
    assert [(m.topic, m.payload) for m in gw.messages] == [(own, b"genuine")]


def test_forgery_over_mqtt311_is_dropped(connect) -> None:
    """MQTT 3.1.1 has no refusal code: the broker acks and discards."""
    gw = connect("gw-o1")
    gw.subscribe(topics.subscription("o1", "evt"))
    for forged in FORGED:
        lk01 = connect("lk01", protocol=mqtt.MQTTv311)
        lk01.client.publish(forged, b"forged", qos=1).wait_for_publish(5)
    lk01 = connect("lk01", protocol=mqtt.MQTTv311)
    lk01.client.publish(topics.build("o1", "locker", "lk01", "evt"), b"genuine", qos=1).wait_for_publish(5)
    assert gw.wait_for(lambda ms: any(m.payload == b"genuine" for m in ms))
    assert [m.payload for m in gw.messages] == [b"genuine"]


def test_device_reads_only_its_own_commands(connect) -> None:
    gw = connect("gw-o1")
    lk01 = connect("lk01")
    lk01.subscribe(topics.build("o1", "locker", "lk01", "cmd"))
    lk01.subscribe(topics.build("o1", "locker", "lk02", "cmd"))  # refused in its SUBACK
    gw.client.publish(topics.build("o1", "locker", "lk02", "cmd"), b"for-lk02", qos=1).wait_for_publish(5)
    gw.client.publish(topics.build("o1", "locker", "lk01", "cmd"), b"for-lk01", qos=1).wait_for_publish(5)
    assert lk01.wait_for(lambda ms: any(m.payload == b"for-lk01" for m in ms))
    assert [m.payload for m in lk01.messages] == [b"for-lk01"]


def test_wrong_password_is_refused(connect) -> None:
    with pytest.raises(ConnectionRefusedError):
        connect("lk01", password="guess")


def test_restart_keeps_queued_messages_for_persistent_session(broker: Mosquitto, connect) -> None:
    """Stop the gateway's session, publish, restart the broker: still delivered."""
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-persist",
                      clean_session=False, protocol=mqtt.MQTTv311)
    sub.username_pw_set("gw-o1", "gw-secret")
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(topics.subscription("o1", "evt"), qos=1)
    sub.loop_start()
    time.sleep(0.3)
    sub.disconnect()
    sub.loop_stop()
    lk01 = connect("lk01")
    assert publish_v5(lk01, topics.build("o1", "locker", "lk01", "evt"), b"queued") == 0
    broker.restart()
    got = threading.Event()
    sub.on_message = lambda c, u, m: got.set() if m.payload == b"queued" else None
    sub.reconnect()
    sub.loop_start()
    try:
        assert got.wait(10), "queued QoS 1 message lost across broker restart"
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_only_the_gateway_writes_a_devices_time(connect) -> None:
    """Trusted time (protocol/timesync.py): a device reads its own ``time``
    topic; it cannot set its own time or another device's."""
    own = topics.build("o1", "locker", "lk01", "time")
    other = topics.build("o1", "locker", "lk02", "time")
    watcher = connect("gw-o1")
    watcher.subscribe(topics.subscription("o1", "time"))
    assert publish_v5(connect("lk01"), own, b'{"t":1,"v":1}') == 0x87
    assert publish_v5(connect("lk01"), other, b'{"t":1,"v":1}') == 0x87
    lk01 = connect("lk01")
    lk01.subscribe(own, qos=0)
    lk01.subscribe(other, qos=0)
    gw = connect("gw-o1")
    gw.client.publish(other, b"for-lk02", qos=0).wait_for_publish(5)
    gw.client.publish(own, b"for-lk01", qos=0).wait_for_publish(5)
    assert lk01.wait_for(lambda ms: any(m.payload == b"for-lk01" for m in ms))
    assert [m.payload for m in lk01.messages] == [b"for-lk01"]
    assert watcher.wait_for(lambda ms: len(ms) >= 2)
    assert [m.payload for m in watcher.messages] == [b"for-lk02", b"for-lk01"]  # no forgery got through
