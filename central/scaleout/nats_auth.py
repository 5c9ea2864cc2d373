"""The NATS side of the outlets' MQTT logins: one NATS user per outlet, in
nats-server's configuration (an ``include`` file), with permissions that
bind the outlet segment of the topic to the login.

Why in the server and not in the MQTT front: a forged outlet's batch must
never reach the log at all. nats-server refuses a publish outside the
user's permissions (a "Publish Violation" in its log; the MQTT client still
gets its PUBACK and then never an ack, so it retries and stays refused) and
a subscription outside them (SUBACK failure). An outlet may:

* publish ``<prefix>.<outlet>.batch.>`` and ``<prefix>.<outlet>.pull.>``;
* subscribe ``<prefix>.<outlet>.ack.>`` and ``<prefix>.<outlet>.down.>``,
  and ``$MQTT.sub.>``: the delivery subjects nats-server makes for the
  JetStream consumer behind a QoS 1 subscription. An MQTT client cannot
  subscribe to ``$MQTT/...`` topics itself (the server reserves them), so
  this grants nothing beyond its own topics;
* connect over MQTT only (``allowed_connection_types``), so an outlet's
  password is no way into the NATS client port.

The platform's own processes (fronts, workers, the MQTT front) connect as
``platform`` over the NATS port only: with a password, or, on a loopback
rig, as the ``no_auth_user`` (a connection without credentials is the
platform; an MQTT client without them is refused, since ``platform`` is not
allowed MQTT). Adding or retiring an outlet rewrites the file and reloads
the servers (``nats-server --signal reload``, or SIGHUP).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from central.scaleout.mqtt_topics import ANSWER

_OUTLET = re.compile(r"^[a-z0-9_-]{1,32}$")
PLATFORM_USER = "platform"


def outlet_permissions(prefix: str, outlet: str) -> dict[str, list[str]]:
    if not _OUTLET.match(outlet) or outlet == PLATFORM_USER:
        raise ValueError(f"not an outlet id: {outlet!r}")
    base = ".".join([*prefix.split("/"), outlet])
    return {"publish": [f"{base}.{what}.>" for what in ANSWER],
            "subscribe": ["$MQTT.sub.>", *(f"{base}.{what}.>" for what in ANSWER.values())]}


def render(prefix: str, outlets: dict[str, str], platform_password: str | None = None) -> str:
    """The ``authorization`` block (and ``no_auth_user`` when the platform
    has no password) for ``outlets`` (outlet -> MQTT password)."""
    users = []
    if platform_password is None:
        users.append({"user": PLATFORM_USER, "password": "", "allowed_connection_types": ["STANDARD"]})
    else:
        users.append({"user": PLATFORM_USER, "password": platform_password,
                      "allowed_connection_types": ["STANDARD"]})
    for outlet, password in sorted(outlets.items()):
        if not password:
            raise ValueError(f"outlet {outlet} needs an MQTT password")
        users.append({"user": outlet, "password": password, "allowed_connection_types": ["MQTT"],
                      "permissions": outlet_permissions(prefix, outlet)})
    # nats-server's configuration format reads JSON values as they are.
    text = "# written by central/scaleout/nats_auth.py: one user per outlet\n"
    text += "authorization {\n  users: [\n"
    text += "".join(f"    {json.dumps(u, ensure_ascii=True)}\n" for u in users)
    text += "  ]\n}\n"
    if platform_password is None:
        text += f"no_auth_user: {PLATFORM_USER}\n"
    return text


def write(path: Path, prefix: str, outlets: dict[str, str], platform_password: str | None = None) -> None:
    """Write the include file, readable by its owner only (it holds passwords)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render(prefix, outlets, platform_password), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
