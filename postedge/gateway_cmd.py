"""``postedge gateway ...``: run the gateway and the clerk's and operator's
commands around it (status, devices, enqueue, provision)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from postedge import i18n
from postedge.i18n import t


def _load(args: argparse.Namespace):  # noqa: ANN202 - GatewayConfig, imported lazily
    from gateway.config import ConfigError, GatewayConfig

    try:
        return GatewayConfig.load(args.config)
    except ConfigError as e:
        print(t("error", i18n.pick(args.lang), msg=str(e)), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import service
    from gateway.ingest.loop import CrashPoints

    cfg = _load(args)
    return service.run(cfg, CrashPoints(hold_before_commit_s=args.hold_before_commit,
                                   exit_before_ack=args.exit_before_ack))


def _ago(seconds: float, lang: str) -> str:
    s = int(seconds)
    if s < 60:
        return t("ago.s", lang, n=s)
    if s < 3600:
        return t("ago.m", lang, n=s // 60)
    if s < 86400:
        return t("ago.h", lang, n=s // 3600)
    return t("ago.d", lang, n=s // 86400)


def cmd_status(args: argparse.Namespace) -> int:
    from gateway import service

    cfg = _load(args)
    lang = i18n.pick(args.lang)
    doc = service.status(cfg)
    backlog, alarms, last_sync = doc["backlog"], doc["alarms"], doc["last_sync_at"]
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    print(t("status.outlet", lang, outlet=cfg.outlet))
    print(t("status.devices", lang, online=doc["devices_online"], total=doc["devices"]))
    print(t("status.backlog", lang, n=backlog["count"], kb=backlog["bytes"] // 1024,
            age=_ago(backlog["oldest_age_s"], lang) if backlog["count"] else "-"))
    print(t("status.last_sync", lang,
            when=_ago(time.time() - last_sync, lang) if last_sync else t("never", lang)))
    print(t("status.commands", lang, n=doc["commands_pending"]))
    print(t("status.alarms", lang, n=len(alarms)))
    for a in alarms:
        print(f"  {a['device']:<10} {a['body'].get('alarm', a['type'])} "
              f"({_ago(time.time() - a['received_at'], lang)})")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from gateway import service

    cfg = _load(args)
    lang = i18n.pick(args.lang)
    devices = service.devices(cfg)
    if args.json:
        print(json.dumps(devices, ensure_ascii=False))
        return 0
    for d in devices:
        state = t("online" if d["online"] else "offline", lang)
        print(f"{d['device']:<12} {d['kind']:<9} {state} {t('for', lang, d=_ago(d['for_s'], lang))}")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    from gateway.service import Enqueuer
    from protocol.errors import ProtocolError

    cfg = _load(args)
    lang = i18n.pick(args.lang)
    queue = Enqueuer(cfg)
    rc = 0
    try:
        for f in args.files:
            try:
                cid = queue.enqueue(args.kind, Path(f).read_bytes())
                print(t("enqueued", lang, id=cid))
            except (OSError, ProtocolError) as e:
                print(t("error", lang, msg=f"{f}: {e}"), file=sys.stderr)
                rc = 1
    finally:
        queue.close()
    return rc


def cmd_drain(args: argparse.Namespace) -> int:
    """Sync the whole backlog now and exit (gateway stopped): before swapping
    or moving a gateway box."""
    from gateway import service

    cfg = _load(args)
    lang = i18n.pick(args.lang)
    if cfg.upstream is None:
        print(t("error", lang, msg=f"{args.config} has no [upstream] table"), file=sys.stderr)
        return 2
    sent, left = service.drain(cfg, args.timeout)
    print(t("drained", lang, n=sent, left=left))
    return 0 if left == 0 else 1


def cmd_provision(args: argparse.Namespace) -> int:
    from gateway.provision import ProvisionError, provision

    lang = i18n.pick(args.lang)
    try:
        out = provision(args.inventory, args.out, args.listen, args.port, args.tls_port, args.keys,
                        args.notifier_keys)
    except ProvisionError as e:
        print(t("error", lang, msg=str(e)), file=sys.stderr)
        return 2
    print(t("provisioned", lang, n=out["devices"], dir=args.out))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    g = sub.add_parser("gateway", help="the outlet gateway")
    gs = g.add_subparsers(dest="gw", required=True)

    r = gs.add_parser("run", help="run the gateway: ingest, downstream relay, upstream sync, status page")
    r.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    r.add_argument("--hold-before-commit", type=float, default=0.0, metavar="SECONDS",
                   help="fault test hook: wait this long between receiving and committing")
    r.add_argument("--exit-before-ack", action="store_true",
                   help="fault test hook: exit after the first commit, before acking")
    r.set_defaults(func=cmd_run)

    s = gs.add_parser("status", help="what the clerk needs to know: devices, backlog, sync, alarms")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    d = gs.add_parser("devices", help="devices with online/offline and for how long")
    d.add_argument("--config", type=Path, required=True)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_devices)

    e = gs.add_parser("enqueue", help="queue signed commands for devices (delivered when online)")
    e.add_argument("--config", type=Path, required=True)
    e.add_argument("--kind", required=True, help="device kind: locker, scanner, handheld")
    e.add_argument("files", nargs="+", metavar="FILE", help="one signed command (JSON) per file")
    e.set_defaults(func=cmd_enqueue)

    dr = gs.add_parser("drain", help="sync the whole backlog upstream now, then exit (gateway stopped)")
    dr.add_argument("--config", type=Path, required=True)
    dr.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    dr.set_defaults(func=cmd_drain)

    p = gs.add_parser("provision", help="broker config, per-device credentials and ACL for an outlet")
    p.add_argument("inventory", type=Path, help="outlet inventory TOML (outlet, devices)")
    p.add_argument("--out", type=Path, required=True, help="folder to write into")
    p.add_argument("--listen", default="0.0.0.0", help="address the broker's TLS listener is on")
    p.add_argument("--port", type=int, default=1883, help="plaintext port, on 127.0.0.1 only (the gateway)")
    p.add_argument("--tls-port", type=int, default=8883, help="MQTT over TLS for the outlet LAN")
    p.add_argument("--keys", type=Path, default=None,
                   help="the platform's key file for this outlet (device id -> its own key section)")
    p.add_argument("--notifier-keys", type=Path, default=None,
                   help="the platform's outlet notifier key file for SMS ([keys] kv = hex)")
    p.set_defaults(func=cmd_provision)
