"""Prometheus metrics of the gateway (scraped at /metrics on the status
server). One registry per process; names are the contract with dashboards."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()

INGESTED = Counter("postedge_ingested_events", "Device events committed to the store",
                   ["cls"], registry=REGISTRY)
DUPLICATES = Counter("postedge_duplicate_events", "Redelivered events dropped by id",
                     registry=REGISTRY)
REJECTED = Counter("postedge_rejected_messages", "Messages refused at ingest, by reason",
                   ["reason"], registry=REGISTRY)
SEQ_ANOMALIES = Counter("postedge_sequence_anomalies", "Per-device sequence gaps and reorders",
                        ["kind"], registry=REGISTRY)
GROUP_COMMITS = Counter("postedge_group_commits", "SQLite transactions at ingest",
                        registry=REGISTRY)
SYNCED = Counter("postedge_synced_events", "Events acked by the central side", registry=REGISTRY)
SYNC_BATCHES = Counter("postedge_sync_batches", "Upstream batches by outcome", ["outcome"],
                       registry=REGISTRY)
SYNC_BYTES = Counter("postedge_sync_bytes", "Bytes sent upstream (compressed)", registry=REGISTRY)
BACKLOG_EVENTS = Gauge("postedge_backlog_events", "Events not yet acked upstream",
                       registry=REGISTRY)
BACKLOG_BYTES = Gauge("postedge_backlog_bytes", "Bytes of events not yet acked upstream",
                      registry=REGISTRY)
OLDEST_UNSYNCED = Gauge("postedge_oldest_unsynced_seconds", "Age of the oldest unsynced event",
                        registry=REGISTRY)
DEVICES_ONLINE = Gauge("postedge_devices_online", "Devices whose presence is online",
                       registry=REGISTRY)
EVICTED = Counter("postedge_evicted_events", "Events evicted under the disk budget, by class",
                  ["cls"], registry=REGISTRY)
COMMANDS = Counter("postedge_commands", "Downstream commands by outcome", ["outcome"],
                   registry=REGISTRY)
UPLOAD_CHUNKS = Counter("postedge_upload_chunks", "Photo chunks from handhelds, by outcome "
                        "(stored, duplicate, truncated)", ["outcome"], registry=REGISTRY)
UPLOAD_BYTES = Counter("postedge_upload_bytes", "Photo chunk bytes stored", registry=REGISTRY)
UPLOAD_REJECTED = Counter("postedge_upload_rejected", "Upload requests refused, by reason",
                          ["reason"], registry=REGISTRY)
PHOTOS = Counter("postedge_photos", "Photos by outcome (complete, deduplicated, hash_mismatch, "
                 "expired, synced)", ["outcome"], registry=REGISTRY)
PHOTO_SYNC_BYTES = Counter("postedge_photo_sync_bytes", "Photo bytes sent upstream", registry=REGISTRY)
STORE_ERRORS = Counter("postedge_store_errors", "Group commits held back by a storage fault (retried)",
                       registry=REGISTRY)
GATEWAY_FAULTS = Counter("postedge_gateway_faults", "Faults the gateway survived, by where they happened "
                         "(budget, relay, confirm, ...)", ["where"], registry=REGISTRY)
MISBEHAVING = Counter("postedge_misbehaving_device_alarms", "Alarms raised for devices that keep sending "
                      "refused messages", registry=REGISTRY)
QUARANTINES = Counter("postedge_device_quarantines", "Devices taken off the gateway's subscriptions for "
                      "flooding refused messages", registry=REGISTRY)
QUARANTINED = Gauge("postedge_devices_quarantined", "Devices held off the gateway's subscriptions now",
                    registry=REGISTRY)
QUARANTINE_DROPPED = Counter("postedge_quarantine_dropped_messages", "Messages of held devices dropped "
                             "unread (queued before the hold; the devices send their events again)",
                             registry=REGISTRY)
NOTIFY_ROUTES = Counter("postedge_notify_routes", "Notification routes decided, by purpose and sender "
                        "(platform, gateway)", ["purpose", "by"], registry=REGISTRY)
NOTIFY_SMS = Counter("postedge_notify_sms", "Texts through the outlet's modem by outcome (sent, failed, "
                     "uncertain, delivered, undelivered, retry)", ["outcome"], registry=REGISTRY)
NOTIFY_MODEM_DOWN = Counter("postedge_notify_modem_down", "Failed attempts to open the SMS modem",
                            registry=REGISTRY)
