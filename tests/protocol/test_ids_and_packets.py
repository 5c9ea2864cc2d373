"""Event-id sequence counters over FileStorage, and the MQTT 3.1.1 packet codec."""

import os

import pytest

from drivers.storage import FileStorage
from firmware.mqtt import packets
from protocol import ids

# --------------------------------------------------------------------------
# SeqCounter


def _storage(tmp_path):
    return FileStorage(str(tmp_path / "flash"))


def test_missing_counter_file_starts_at_one(tmp_path) -> None:
    st = _storage(tmp_path)
    assert st.read("seq") is None
    c = ids.SeqCounter(st)
    assert c.boot == 1
    assert not c.corrupt
    assert c.peek() == 1
    assert c.next() == 1
    assert c.next() == 2
    assert len(c.incarnation) == 8 and all(ch in "0123456789abcdef" for ch in c.incarnation)


def test_numbers_increase_across_reboots(tmp_path) -> None:
    st = _storage(tmp_path)
    c = ids.SeqCounter(st)
    inc = c.incarnation
    seen = []
    for boot in range(1, 6):
        assert c.boot == boot
        assert c.incarnation == inc
        assert not c.corrupt
        for _ in range(boot):  # a different number of events each boot
            seen.append(c.next())
        c = ids.SeqCounter(st)  # reboot
    assert seen == sorted(set(seen)), "numbers must be strictly increasing"
    assert seen[0] == 1
    assert all(n > seen[-1] for n in (c.next(), c.next()))


def test_reboot_without_events_keeps_counting(tmp_path) -> None:
    st = _storage(tmp_path)
    a = ids.SeqCounter(st).next()
    for _ in range(3):
        ids.SeqCounter(st)  # boots that send nothing
    c = ids.SeqCounter(st)
    assert c.boot == 5
    assert c.next() > a


@pytest.mark.parametrize("handed_out", [0, 1, 3, 9, 10, 11, 25])
def test_power_cut_with_block_reservation_never_reuses_a_number(tmp_path, handed_out) -> None:
    st = _storage(tmp_path)
    c = ids.SeqCounter(st, block=10)
    inc = c.incarnation
    used = [c.next() for _ in range(handed_out)]
    del c  # power cut: nothing runs after the last number handed out
    c = ids.SeqCounter(st, block=10)
    assert c.incarnation == inc
    assert c.boot == 2
    after = [c.next() for _ in range(15)]
    assert not set(used) & set(after)
    if used:
        assert after[0] > used[-1]
        # Block reservation may skip, but at most block - 1 numbers.
        assert after[0] - used[-1] - 1 <= 9
    assert after == list(range(after[0], after[0] + 15))


def test_repeated_power_cuts_never_reuse_a_number(tmp_path) -> None:
    st = _storage(tmp_path)
    used = []
    for k in [0, 4, 10, 1, 17, 0, 3]:
        c = ids.SeqCounter(st, block=10)
        used.extend(c.next() for _ in range(k))
    assert len(used) == len(set(used))
    assert used == sorted(used)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xfe\x00garbage\x81",
        b"",
        b"3fa2c0de 7",  # torn: no high-water mark
        b"3FA2C0DE 7 40\n",  # incarnation not lowercase hex
        b"3fa2c0de -1 40\n",
        b"3fa2c0de 7 0\n",
        b"3fa2c0de seven 40\n",
    ],
)
def test_corrupt_counter_file_starts_a_new_incarnation(tmp_path, garbage) -> None:
    st = _storage(tmp_path)
    c = ids.SeqCounter(st)
    old = c.incarnation
    old_ids = {ids.format_event_id("lk01", old, c.next()) for _ in range(5)}
    st.write("seq", garbage)
    c = ids.SeqCounter(st)
    assert c.corrupt
    assert c.incarnation != old  # 2**-32 chance of a false failure
    assert c.boot == 1
    assert c.next() == 1
    assert ids.format_event_id("lk01", c.incarnation, 1) not in old_ids
    # The new incarnation is persisted: the next boot is a normal one.
    again = ids.SeqCounter(st)
    assert not again.corrupt
    assert again.incarnation == c.incarnation
    assert again.boot == 2
    assert again.next() > 1


def test_counter_rejects_block_below_one(tmp_path) -> None:
    with pytest.raises(ValueError):
        ids.SeqCounter(_storage(tmp_path), block=0)


# --------------------------------------------------------------------------
# FileStorage


def test_file_storage_write_is_atomic_and_read_returns_last_write(tmp_path) -> None:
    root = tmp_path / "flash"
    st = FileStorage(str(root))
    for i in range(20):
        data = b"record %d " % i * (i + 1)
        st.write("rec", data)
        assert st.read("rec") == data
        assert sorted(os.listdir(root)) == ["rec"], "no temporary file may be left behind"
    st.write("other", b"")
    assert st.read("other") == b""
    assert sorted(os.listdir(root)) == ["other", "rec"]


def test_file_storage_read_missing_is_none(tmp_path) -> None:
    st = FileStorage(str(tmp_path / "flash"))
    assert st.read("nothing") is None
    st.write("x", b"1")
    st.delete("x")
    assert st.read("x") is None
    st.delete("x")  # deleting twice is fine


def test_file_storage_reopens_existing_root(tmp_path) -> None:
    FileStorage(str(tmp_path / "flash")).write("a", b"kept")
    assert FileStorage(str(tmp_path / "flash")).read("a") == b"kept"


def test_file_storage_power_cut_before_rename_keeps_old_record(tmp_path) -> None:
    root = tmp_path / "flash"
    st = FileStorage(str(root))
    st.write("rec", b"old")
    # A cut between writing the temporary file and the rename leaves this:
    (root / "rec.tmp").write_bytes(b"new but half-wri")
    assert st.read("rec") == b"old"
    st.write("rec", b"newer")  # the next write replaces the stale temporary
    assert st.read("rec") == b"newer"
    assert sorted(os.listdir(root)) == ["rec"]


# --------------------------------------------------------------------------
# MQTT packets


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (321, b"\xc1\x02"),  # the spec's worked example
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_encoding(n, encoded) -> None:
    assert packets.remaining_length(n) == encoded
    assert _decode_remaining(encoded) == (n, len(encoded))


def _decode_remaining(data, i=0):
    """The MQTT 3.1.1 section 2.2.3 decoding algorithm, as written in the spec."""
    multiplier = 1
    value = 0
    start = i
    while True:
        b = data[i]
        i += 1
        value += (b & 127) * multiplier
        multiplier *= 128
        if not b & 128:
            return value, i - start


def _split(pkt):
    n, used = _decode_remaining(pkt, 1)
    body = pkt[1 + used:]
    assert len(body) == n, "remaining length must match the body"
    return pkt[0], body


def test_connect_with_will_user_and_password_matches_spec() -> None:
    pkt = packets.connect(
        "lk01", keepalive=60, clean=True, user="lk01", password="pw",
        will_topic="pe/v1/o1/locker/lk01/presence", will_msg=b"offline", will_qos=1, will_retain=True,
    )
    expected = (
        b"\x10"  # CONNECT, flags 0
        b"\x42"  # remaining length 66
        b"\x00\x04MQTT"  # protocol name
        b"\x04"  # protocol level 4 = 3.1.1
        b"\xee"  # user 0x80 | password 0x40 | will retain 0x20 | will QoS 1 0x08 | will 0x04 | clean 0x02
        b"\x00\x3c"  # keep alive 60 s
        b"\x00\x04lk01"  # client id
        b"\x00\x1dpe/v1/o1/locker/lk01/presence"  # will topic (29 bytes)
        b"\x00\x07offline"  # will message
        b"\x00\x04lk01"  # user name
        b"\x00\x02pw"  # password
    )
    assert pkt == expected


def test_connect_minimal_matches_spec() -> None:
    assert packets.connect("c", keepalive=30) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x1e\x00\x01c"
    # clean=False clears the clean-session bit; a QoS 0 non-retained will.
    assert packets.connect("c", keepalive=0, clean=False, will_topic="t", will_msg=b"", will_qos=0,
                           will_retain=False) == (
        b"\x10\x12\x00\x04MQTT\x04\x04\x00\x00\x00\x01c\x00\x01t\x00\x00"
    )


def test_connect_utf8_strings_are_length_prefixed_in_bytes() -> None:
    first, body = _split(packets.connect("é", user="漢", password=b"\x00\xff"))
    assert first == 0x10
    assert body[7] == 0x02 | 0x80 | 0x40
    assert body[10:] == b"\x00\x02\xc3\xa9" + b"\x00\x03\xe6\xbc\xa2" + b"\x00\x02\x00\xff"


def test_publish_first_byte_flags() -> None:
    assert packets.publish("a/b", b"hi", qos=1, retain=True, pid=10, dup=True) == (
        b"\x3b\x09\x00\x03a/b\x00\x0ahi"
    )
    assert packets.publish("a/b", b"", qos=0)[0] == 0x30
    assert packets.publish("a/b", b"", qos=0, retain=True)[0] == 0x31
    assert packets.publish("a/b", b"", qos=1, pid=1)[0] == 0x32
    assert packets.publish("a/b", b"", qos=1, pid=1, dup=True)[0] == 0x3A
    # DUP is meaningless at QoS 0 and cleared (MQTT-3.3.1-2); the client has
    # no QoS 2 flow, so it refuses to start one.
    assert packets.publish("a/b", b"", qos=0, dup=True)[0] == 0x30
    with pytest.raises(packets.PacketError):
        packets.publish("a/b", b"", qos=2, pid=1)


def test_other_packets_match_spec() -> None:
    assert packets.puback(0x1234) == b"\x40\x02\x12\x34"
    assert packets.subscribe(7, "pe/v1/o1/+/+/evt", qos=1) == (
        b"\x82\x15\x00\x07\x00\x10pe/v1/o1/+/+/evt\x01"
    )
    assert packets.pingreq() == b"\xc0\x00"
    assert packets.disconnect() == b"\xe0\x00"


PUBLISHES = [
    ("pe/v1/o1/locker/lk01/evt", b'{"v":1}', 1, 1, False, False),
    ("pe/v1/o1/locker/lk01/state", b"", 0, 0, True, False),
    ("a", b"\x00\xff" * 100, 1, 65535, True, True),
    ("t/é/漢", "ünïcode".encode(), 1, 300, False, True),
    ("/", b"x", 0, 0, False, False),
    ("big", bytes(range(256)) * 80, 1, 2, False, False),  # remaining length needs 3 bytes
]


@pytest.mark.parametrize(("topic", "payload", "qos", "pid", "retain", "dup"), PUBLISHES)
def test_parse_publish_round_trips(topic, payload, qos, pid, retain, dup) -> None:
    pkt = packets.publish(topic, payload, qos=qos, retain=retain, pid=pid, dup=dup)
    first, body = _split(pkt)
    assert first & 0xF0 == packets.PUBLISH
    assert packets.parse_publish(first, body) == (topic, payload, qos, pid, retain, dup)


@pytest.mark.parametrize(("topic", "payload", "qos", "pid", "retain", "dup"), PUBLISHES)
def test_parse_publish_truncated_raises_packet_error(topic, payload, qos, pid, retain, dup) -> None:
    first, body = _split(packets.publish(topic, payload, qos=qos, retain=retain, pid=pid, dup=dup))
    header = 2 + len(topic.encode()) + (2 if qos else 0)
    for cut in range(header):
        with pytest.raises(packets.PacketError):
            packets.parse_publish(first, body[:cut])
    # Cutting into the payload can't be detected from the body alone: it parses
    # as a shorter payload.
    assert packets.parse_publish(first, body[:header])[1] == b""


def test_parse_publish_topic_length_past_the_body() -> None:
    with pytest.raises(packets.PacketError):
        packets.parse_publish(0x30, b"\xff\xffabc")
    with pytest.raises(packets.PacketError):
        packets.parse_publish(0x32, b"\x00\x01a\x00")  # QoS 1 with half a packet id


def test_empty_topic_is_refused_by_the_encoder_and_parsed_off_the_wire() -> None:
    # The encoder refuses what a broker closes the connection on; the
    # parser still reads such bytes from a peer, written here by hand.
    with pytest.raises(packets.PacketError):
        packets.publish("", b"x")
    assert packets.parse_publish(0x30, b"\x00\x00x") == ("", b"x", 0, 0, False, False)
