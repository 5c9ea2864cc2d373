# The thin locker loop: boots, takes event ids from the persistent sequence,
# and publishes door events at QoS 1 until each is acked, reconnecting with
# jittered backoff. Issue 3 grows this into the real locker application; the
# seams (protocol, storage, MQTT client) are the ones it keeps.
#
# Run on the unix port:
#   MICROPYPATH=<repo> micropython -X heapsize=128k -m firmware.locker.thin cfg.json

import json
import os
import sys
import time

from firmware.mqtt.client import Client, MQTTError
from firmware.protocol import envelope, topics
from firmware.protocol.ids import SeqCounter, format_event_id
from firmware.storage import FileStorage


def log(**kw):
    print(json.dumps(kw))


def _jitter(cap):
    # Full jitter: uniform in [0, cap), from the hardware RNG.
    r = os.urandom(2)
    return cap * ((r[0] << 8) | r[1]) / 65536


class ThinLocker:
    def __init__(self, cfg):
        self.cfg = cfg
        self.outlet = cfg["outlet"]
        self.device = cfg["device"]
        self.storage = FileStorage(cfg["state_dir"])
        self.seq = SeqCounter(self.storage)
        self.client = Client(
            "pe-" + self.device, cfg.get("host", "127.0.0.1"), cfg["port"],
            cfg["device"], cfg["password"], timeout=cfg.get("timeout", 3.0),
        )
        self.evt_topic = topics.build(self.outlet, "locker", self.device, "evt")
        self.presence = topics.build(self.outlet, "locker", self.device, "presence")
        self.connected = False

    def ensure_connected(self):
        delay = 0.2
        while not self.connected:
            try:
                self.client.connect(clean=True, will_topic=self.presence, will_msg=b"offline")
                self.client.publish(self.presence, b"online", qos=1, retain=True)
                self.connected = True
                log(evt="connected", device=self.device)
            except MQTTError as e:
                log(evt="connect_failed", error=str(e))
                time.sleep(_jitter(delay))
                delay = min(delay * 2, self.cfg.get("backoff_cap", 5.0))

    def send(self, payload):
        """Publish until PUBACK; a resend keeps the packet id and sets DUP."""
        pid = self.client.next_pid()
        dup = False
        while True:
            self.ensure_connected()
            try:
                self.client.publish(self.evt_topic, payload, qos=1, pid=pid, dup=dup)
                return
            except MQTTError as e:
                log(evt="publish_failed", error=str(e))
                self.client.close()
                self.connected = False
                dup = True

    def run(self):
        log(evt="boot", device=self.device, incarnation=self.seq.incarnation, boot=self.seq.boot)
        for i in range(self.cfg.get("events", 1)):
            eid = format_event_id(self.device, self.seq.incarnation, self.seq.next())
            env = envelope.make(eid, int(time.time()), "locker.door", "status",
                                {"door": i % 8 + 1, "state": "closed"}, boot=self.seq.boot)
            self.send(envelope.encode(env))
            log(evt="acked", id=eid)
            time.sleep(self.cfg.get("interval", 0))
        try:
            self.client.publish(self.presence, b"offline", qos=1, retain=True)
        except MQTTError:
            pass  # the Last Will says the same
        self.client.disconnect()
        log(evt="done", device=self.device)


def main(argv):
    with open(argv[1]) as f:
        cfg = json.load(f)
    ThinLocker(cfg).run()


if __name__ == "__main__":
    main(sys.argv)
