"""Where the scale-out backend's parts are, in one value that the front's
process and every worker process are given alike (a worker takes it as
JSON on its command line, so nothing else has to be shared)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

_NS = re.compile(r"^[a-z0-9_]{1,32}$")
# Topic levels that map to NATS subject tokens unchanged (no ".", no wildcards).
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,32}(/[A-Za-z0-9_-]{1,32}){0,3}$")


@dataclass(frozen=True)
class ScaleOutConfig:
    nats: list[str]  # every node's client URL; nats-py fails over between them
    pg: str  # a libpq connection string for the database
    # One deployment's names in the cluster: its stream, subjects and consumer
    # (several deployments, or several tests, share one NATS cluster).
    namespace: str = "pe"
    replicas: int = 3
    # How long JetStream waits for a worker's ack before handing the message to
    # another worker: the recovery time after a worker dies mid-batch.
    ack_wait_s: float = 30.0
    # How long the log keeps a batch after it was written (a replay window).
    max_age_s: float = 7 * 24 * 3600.0
    # JetStream drops a second publish with the same Nats-Msg-Id within this
    # window: a gateway's resend after a lost ack is not logged twice.
    duplicate_window_s: float = 120.0
    # How long ``store`` keeps retrying a publish (a node down, a leader
    # election) before it gives up and the gateway gets an error and retries.
    publish_deadline_s: float = 15.0
    # The gateways' MQTT topic prefix (``gateway.config.DEFAULT_PREFIX``) as
    # the MQTT front (``central/scaleout/mqtt_front.py``) reads it through
    # nats-server's MQTT listener: topic ``a/b`` is subject ``a.b``. One
    # prefix per cluster: its stream captures every outlet under it.
    mqtt_prefix: str = "pe-up/v1"

    def __post_init__(self) -> None:
        if not _NS.match(self.namespace):
            raise ValueError(f"namespace must match {_NS.pattern}: {self.namespace!r}")
        if not self.nats:
            raise ValueError("at least one NATS URL is needed")
        if not _PREFIX.match(self.mqtt_prefix):
            raise ValueError(f"mqtt_prefix must match {_PREFIX.pattern}: {self.mqtt_prefix!r}")

    @property
    def stream(self) -> str:
        return f"{self.namespace.upper()}_BATCHES"

    @property
    def durable(self) -> str:
        return "ingest"

    def subject(self, outlet: str) -> str:
        return f"{self.namespace}.batches.{outlet}"

    @property
    def subjects(self) -> str:
        return f"{self.namespace}.batches.>"

    @property
    def mqtt_stream(self) -> str:
        return f"{self.namespace.upper()}_MQTT_UP"

    @property
    def mqtt_durable(self) -> str:
        return "mqtt-front"

    def mqtt_subject(self, outlet: str, what: str, channel: str = "*", mid: str = "*") -> str:
        """The NATS subject of one MQTT topic (``*`` for a wildcard level)."""
        return ".".join([*self.mqtt_prefix.split("/"), outlet, what, channel, mid])

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScaleOutConfig:
        return cls(**json.loads(text))
