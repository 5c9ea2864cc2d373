"""The simulator's broker when Mosquitto is not installed: amqtt, a
pure-Python MQTT 3.1.1 broker, in a process of its own, set up the way the
outlet's Mosquitto is (``gateway/broker.py``), behind the same interface.

What has to hold for the simulation to mean anything, and how:

- Offline QoS 1 sessions are queued. amqtt queues for a persistent session
  only when the client is authenticated (not for anonymous clients), so
  every device and the gateway log in: a password file (SHA-512 crypt, the
  ``$6$`` format both amqtt and the gateway's upload login accept) and
  anonymous access off. ``tests/simulator/test_simulator.py`` checks the queueing.
- A device writes only under its own name: amqtt's topic ACL plugin gets the
  same per-device publish and subscribe lists as Mosquitto's ACL, and a
  Mosquitto-format ACL file is written too, because the gateway reads the
  account kinds from it.

- The outlet broker's hardening (``gateway/broker.py``
  ``OutletLimits``), as far as amqtt can be made to: the broker runs from
  this module (``python -m simulator.pybroker``), which wraps two amqtt
  internals before starting it. A CONNECT's client id is replaced by its
  username once the password checks (Mosquitto's
  ``use_username_as_clientid``), and by a throwaway id otherwise: amqtt
  applies a clean session *before* it authenticates, so without this a
  login that fails could still wipe the gateway's queued events. A packet
  whose fixed header announces more than ``max_packet`` bytes ends the
  connection before its body is read (``max_packet_size``).

What does not hold, and is said in the report (``broker`` names amqtt):
amqtt keeps sessions in memory only, so a ``broker_restart`` fault loses
what it had queued; MQTT 5 is not spoken; queues and in-flight windows have
no message or byte caps (``max_queued_*``, ``max_inflight_bytes``), so a
flood while the gateway is away grows the broker's memory. Mosquitto stays
the broker of record: ``scripts/setup`` installs it and the simulator
prefers it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import logs
from common.ports import free_port
from gateway.broker import OUTLET_LIMITS, Account, Mosquitto

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # the $6$ hashes amqtt verifies; deprecated in 3.11, still here through 3.12


def mosquitto_hash(password: str, iterations: int = 101) -> str:
    """Mosquitto 2.0's ``$7$`` password hash (PBKDF2-HMAC-SHA512), as ``mosquitto_passwd``
    writes it, for hosts without that tool."""
    salt = os.urandom(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def amqtt_version() -> str:
    return f"amqtt {version('amqtt')}"


class AmqttBroker(Mosquitto):
    """amqtt behind the outlet broker's interface (``gateway.broker.Mosquitto``)."""

    def __init__(self, directory: Path, accounts: list[Account], port: int | None = None) -> None:
        # Not Mosquitto.__init__: that writes Mosquitto's files with mosquitto_passwd.
        self.directory = Path(directory)
        self.accounts = accounts
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        # amqtt's own file (SHA-512 crypt) and a Mosquitto-format one (PBKDF2, ``$7$``) for
        # the gateway's handheld login, at the path the outlet's Mosquitto would have it.
        own = self.directory / "amqtt-passwd"
        sha512 = crypt.METHOD_SHA512
        own.write_text("".join(f"{a.username}:{crypt.crypt(a.password, crypt.mksalt(sha512))}\n"
                               for a in accounts))
        passwd = self.directory / "passwd"
        passwd.write_text("".join(f"{a.username}:{mosquitto_hash(a.password)}\n" for a in accounts))
        for f in (own, passwd):
            f.chmod(0o600)
        (self.directory / "acl").write_text("\n\n".join("\n".join(a.acl_lines()) for a in accounts) + "\n")
        lines = ["listeners:", "  default:", "    type: tcp", f"    bind: 127.0.0.1:{self.port}", "plugins:",
                 "  amqtt.plugins.authentication.FileAuthPlugin:", f"    password_file: {own}",
                 "  amqtt.plugins.topic_checking.TopicAccessControlListPlugin:", "    publish_acl:"]
        for a in accounts:
            lines.append(f"      {a.username}: [{', '.join(repr(t) for t in a.acl_topics()[0])}]")
        lines.append("    acl:")
        for a in accounts:
            lines.append(f"      {a.username}: [{', '.join(repr(t) for t in a.acl_topics()[1])}]")
        self.conf = self.directory / "amqtt.yaml"
        self.conf.write_text("\n".join(lines) + "\n")

    NAME = "amqtt"

    @property
    def log_path(self) -> Path:
        return self.directory / "stderr.log"

    def command(self) -> list[str]:
        # Start, stop (a restart forgets sessions: amqtt has no persistence) and kill are
        # Mosquitto's process handling, inherited. This module's main() hardens amqtt first.
        return [sys.executable, "-m", "simulator.pybroker", "-c", str(self.conf),
                "--passwd", str(self.directory / "amqtt-passwd"), "--max-packet", str(self.max_packet)]

    #: The outlet's packet cap (``gateway/broker.py`` OutletLimits.max_packet).
    max_packet = OUTLET_LIMITS.max_packet


log = logs.get(__name__)


def _hashes(passwd: Path) -> dict[str, str]:
    out = {}
    for line in passwd.read_text().splitlines():
        user, sep, h = line.partition(":")
        if sep:
            out[user] = h
    return out


def harden_amqtt(hashes: dict[str, str], max_packet: int) -> None:
    """Patch amqtt (in this broker process only) the way the outlet's
    Mosquitto is configured; see the module docstring for why each.

    Wraps ``BrokerProtocolHandler.init_from_connect`` (it returns the new
    session before amqtt looks up, or for a clean session deletes, the stored
    session of that client id) and ``MQTTFixedHeader.from_stream`` (every
    packet's length is known there before its body is read). Both are amqtt
    internals of 0.12: ``tests/simulator/test_simulator.py`` exercises them."""
    from amqtt.mqtt.packet import MQTTFixedHeader
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    connect = BrokerProtocolHandler.init_from_connect.__func__  # type: ignore[attr-defined]

    async def init_from_connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        handler, session = await connect(cls, *args, **kwargs)
        user, pw = session.username, session.password
        h = hashes.get(user) if isinstance(user, str) else None
        if h is not None and isinstance(pw, str) and hmac.compare_digest(crypt.crypt(pw, h), h):
            session.client_id = user  # one login, one session, whatever id it sent
        else:
            # The login will be refused; its clean session must not hit a real one.
            session.client_id = f"refused-{secrets.token_hex(8)}"
        return handler, session

    BrokerProtocolHandler.init_from_connect = classmethod(init_from_connect)  # type: ignore[method-assign]

    fixed = MQTTFixedHeader.from_stream.__func__  # type: ignore[attr-defined]

    async def from_stream(cls: Any, reader: Any) -> Any:
        header = await fixed(cls, reader)
        if header is not None and header.remaining_length > max_packet:
            log.warning("packet of %d bytes over max_packet %d: closing the connection",
                        header.remaining_length, max_packet)
            return None  # reads as end of stream: the connection is closed, the body never read
        return header

    MQTTFixedHeader.from_stream = classmethod(from_stream)  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """``python -m simulator.pybroker -c amqtt.yaml --passwd F --max-packet N``:
    amqtt's own broker script, after :func:`harden_amqtt`."""
    import argparse

    from amqtt.scripts.broker_script import broker_main

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", dest="config", required=True)
    p.add_argument("--passwd", type=Path, required=True)
    p.add_argument("--max-packet", type=int, default=OUTLET_LIMITS.max_packet)
    args = p.parse_args(argv)
    harden_amqtt(_hashes(args.passwd), args.max_packet)
    broker_main(config_file=args.config, debug=False, version=False)


if __name__ == "__main__":
    main()
