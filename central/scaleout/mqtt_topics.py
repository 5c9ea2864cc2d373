"""The MQTT carrier's topics as the platform reads and writes them.

A gateway's MQTT carrier (``gateway/uplink/mqtt.py``) publishes under
``<prefix>/<outlet>/<what>/<channel>/<id>`` and waits for the answer on the
same outlet, channel and id under the answering ``what``. nats-server's MQTT
listener turns the topic into the subject ``<prefix>.<outlet>.<what>.<channel>.<id>``
(``/`` becomes ``.``; none of our levels holds a ``.`` or a wildcard), so the
platform needs no MQTT library: it reads and answers plain subjects. These
names are the contract's (``central/contract/asyncapi.json``, checked by
``tests/central/test_asyncapi.py`` against the carrier's code).
"""

from __future__ import annotations

import re

BATCH = "batch"  # gateway -> platform: a deflate-coded batch, id = batch id
ACK = "ack"  # platform -> gateway: the ack document (or the refusal) of that batch
PULL = "pull"  # gateway -> platform: {"after": N}, id = a nonce
DOWN = "down"  # platform -> gateway: the downlink answer to that nonce

#: What a gateway publishes, and the topic level the platform answers on.
ANSWER = {BATCH: ACK, PULL: DOWN}
TO_PLATFORM = tuple(ANSWER)
TO_GATEWAY = tuple(ANSWER.values())
QOS = 1

_OUTLET = re.compile(r"^[a-z0-9_-]{1,32}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TopicError(ValueError):
    """A subject that is not one of the carrier's (refused and counted)."""


def parse(prefix: str, subject: str) -> tuple[str, str, str, str]:
    """(outlet, what, channel, id) of a subject under ``prefix`` (a topic prefix)."""
    head = prefix.split("/")
    parts = subject.split(".")
    if len(parts) != len(head) + 4 or parts[:len(head)] != head:
        raise TopicError(f"not under {prefix}: {subject[:120]!r}")
    outlet, what, channel, mid = parts[len(head):]
    if not _OUTLET.match(outlet) or what not in ANSWER or not channel.isdigit() or not _ID.match(mid):
        raise TopicError(f"not a carrier topic: {subject[:120]!r}")
    return outlet, what, channel, mid


def answer(prefix: str, outlet: str, what: str, channel: str, mid: str) -> str:
    """The subject the gateway waits on for the answer to ``what``."""
    return ".".join([*prefix.split("/"), outlet, ANSWER[what], channel, mid])
