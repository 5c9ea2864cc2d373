# A small MQTT 3.1.1 client for MicroPython and CPython in which every socket
# operation has a deadline: a broker that stops answering mid-publish makes a
# call fail with MQTTError within `timeout` seconds instead of hanging (the
# failure mode of umqtt.robust). QoS 1 publishes wait for their PUBACK; the
# caller owns retry, keeping the packet id and setting DUP on resend, so the
# outbox (not this class) decides what survives a power cut.

import socket
import struct
import time

from firmware.mqtt import packets as P


class MQTTError(Exception):
    pass


def _now():
    return time.time()


class Client:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, timeout=5.0):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.timeout = timeout
        self.sock = None
        self._pid = 0
        self.received = []

    def next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    # -- socket with deadlines
    def _send(self, data, deadline):
        mv = memoryview(data)
        while len(mv):
            left = deadline - _now()
            if left <= 0:
                raise MQTTError("send timed out")
            self.sock.settimeout(left)
            try:
                n = self.sock.send(mv)
            except OSError as e:
                raise MQTTError("send failed: %s" % e)
            if not n:
                raise MQTTError("connection closed")
            mv = mv[n:]

    def _recv(self, n, deadline):
        buf = b""
        while len(buf) < n:
            left = deadline - _now()
            if left <= 0:
                raise MQTTError("receive timed out")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError as e:
                raise MQTTError("receive failed: %s" % e)
            if not chunk:
                raise MQTTError("connection closed by broker")
            buf += chunk
        return buf

    def _read_packet(self, deadline):
        first = self._recv(1, deadline)[0]
        n = 0
        shift = 0
        for _ in range(4):
            b = self._recv(1, deadline)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        else:
            raise MQTTError("bad remaining length")
        if n > P.MAX_PACKET:
            raise MQTTError("packet of %d bytes is too large" % n)
        return first, (self._recv(n, deadline) if n else b"")

    # -- protocol
    def connect(self, clean=True, will_topic=None, will_msg=b""):
        """Connect; return the session-present flag."""
        self.close()
        deadline = _now() + self.timeout
        try:
            addr = socket.getaddrinfo(self.host, self.port)[0][-1]
            self.sock = socket.socket()
            self.sock.settimeout(self.timeout)
            self.sock.connect(addr)
        except OSError as e:
            self.close()
            raise MQTTError("cannot reach broker %s:%d: %s" % (self.host, self.port, e))
        self._send(P.connect(self.client_id, self.keepalive, clean, self.user, self.password,
                             will_topic, will_msg), deadline)
        first, body = self._read_packet(deadline)
        if first != P.CONNACK or len(body) != 2:
            self.close()
            raise MQTTError("expected CONNACK")
        if body[1]:
            self.close()
            raise MQTTError("broker refused: %s" % P.CONNACK_REASONS.get(body[1], body[1]))
        return bool(body[0] & 1)

    def publish(self, topic, payload, qos=1, retain=False, pid=None, dup=False):
        """Publish; for QoS 1 wait for the PUBACK of `pid`. Returns the pid."""
        if self.sock is None:
            raise MQTTError("not connected")
        deadline = _now() + self.timeout
        if qos and pid is None:
            pid = self.next_pid()
        self._send(P.publish(topic, payload, qos, retain, pid or 0, dup), deadline)
        if qos:
            self._wait_for(P.PUBACK, pid, deadline)
        return pid

    def subscribe(self, topic, qos=1):
        deadline = _now() + self.timeout
        pid = self.next_pid()
        self._send(P.subscribe(pid, topic, qos), deadline)
        body = self._wait_for(P.SUBACK, pid, deadline)
        if len(body) < 3 or body[2] == 0x80:
            raise MQTTError("subscription to %s refused" % topic)

    def ping(self):
        deadline = _now() + self.timeout
        self._send(P.pingreq(), deadline)
        self._wait_for(P.PINGRESP, None, deadline)

    def _wait_for(self, kind, pid, deadline):
        while True:
            first, body = self._read_packet(deadline)
            t = first & 0xF0
            if t == P.PUBLISH:
                self._on_publish(first, body, deadline)
                continue
            if t == kind and (pid is None or struct.unpack("!H", body[:2])[0] == pid):
                return body
            # A stale ack (e.g. for a resend already acked): ignore it.

    def _on_publish(self, first, body, deadline):
        topic, payload, qos, pid, retain, dup = P.parse_publish(first, body)
        self.received.append((topic, payload, retain))
        if qos:
            self._send(P.puback(pid), deadline)

    def disconnect(self):
        if self.sock is not None:
            try:
                self._send(P.disconnect(), _now() + 1)
            except MQTTError:
                pass
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
