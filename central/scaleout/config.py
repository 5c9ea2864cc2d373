"""Where the scale-out backend's parts are, in one value that the front's
process and every worker process are given alike (a worker takes it as
JSON on its command line, so nothing else has to be shared)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

_NS = re.compile(r"^[a-z0-9_]{1,32}$")


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

    def __post_init__(self) -> None:
        if not _NS.match(self.namespace):
            raise ValueError(f"namespace must match {_NS.pattern}: {self.namespace!r}")
        if not self.nats:
            raise ValueError("at least one NATS URL is needed")

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

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScaleOutConfig:
        return cls(**json.loads(text))
