"""The simulator's broker when Mosquitto is not installed: amqtt, a
pure-Python MQTT 3.1.1 broker, in a process of its own, set up the way the
outlet's Mosquitto is (``gateway/broker.py``), behind the same interface.

What has to hold for the simulation to mean anything, and how:

- Offline QoS 1 sessions are queued. amqtt queues for a persistent session
  only when the client is authenticated (not for anonymous clients), so
  every device and the gateway log in: a password file (SHA-512 crypt, the
  ``$6$`` format both amqtt and the gateway's upload login accept) and
  anonymous access off. ``tests/test_simulator.py`` checks the queueing.
- A device writes only under its own name: amqtt's topic ACL plugin gets the
  same per-device publish and subscribe lists as Mosquitto's ACL, and a
  Mosquitto-format ACL file is written too, because the gateway reads the
  account kinds from it.

What does not hold, and is said in the report (``broker`` names amqtt):
amqtt keeps sessions in memory only, so a ``broker_restart`` fault loses
what it had queued; MQTT 5 is not spoken. Mosquitto stays the broker of
record: ``scripts/setup`` installs it and the simulator prefers it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

from gateway.broker import Account, Mosquitto, free_port

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
        # Mosquitto's process handling, inherited.
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(self.conf)]
