"""``postedge gateway ...``: run the gateway and the clerk's and operator's
commands around it (status, devices, enqueue, provision)."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from pathlib import Path

from common.config import describe
from common.text import cells
from postedge import i18n
from postedge.i18n import t
from protocol import topics


def _load(args: argparse.Namespace):  # noqa: ANN202 - GatewayConfig, imported lazily
    from gateway.config import ConfigError, GatewayConfig

    try:
        return GatewayConfig.load(args.config)
    except ConfigError as e:
        print(t("error", i18n.pick(args.lang), msg=describe(e, i18n.pick(args.lang))), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import service
    from gateway.config import ConfigError
    from gateway.ingest.loop import CrashPoints

    cfg = _load(args)
    try:
        return service.run(cfg, CrashPoints(hold_before_commit_s=args.hold_before_commit,
                                       exit_before_ack=args.exit_before_ack))
    except BlockingIOError:
        print(t("error", i18n.pick(args.lang), msg=t("gateway.already_running", i18n.pick(args.lang),
                                                     db=str(cfg.db))), file=sys.stderr)
        return 3
    except ConfigError as e:
        # A config the file check passed but the machine refuses (the web
        # port taken): one line, exit 3, as for any wrong environment.
        lang = i18n.pick(args.lang)
        cause = e.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE and cfg.web is not None:
            msg = t("gateway.port_in_use", lang, host=cfg.web.host, port=cfg.web.port)
        else:
            msg = describe(e, lang)
        print(t("error", lang, msg=msg), file=sys.stderr)
        return 3 if isinstance(cause, OSError) else 2


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
    # 3: the environment is wrong (the gateway is not running); the figures
    # below are then its last ones, and a script must not take them as live.
    rc = 0 if doc["running"] else 3
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
        return rc
    print(t("status.outlet", lang, outlet=cfg.outlet))
    if not doc["running"]:
        print(t("status.not_running", lang, db=str(cfg.db)))
    else:
        link = doc["broker_link"]  # only while running: a stopped gateway's link is history
        if link is not None:
            print(t("status.broker_up" if link["up"] else "status.broker_down", lang,
                    ago=_ago(link["for_s"], lang)))
    never = doc["devices_never"]
    if never:
        print(t("status.devices_never", lang, online=doc["devices_online"], total=doc["devices"],
                n=len(never), names=("、" if lang == "zh" else ", ").join(never)))
    else:
        print(t("status.devices", lang, online=doc["devices_online"], total=doc["devices"]))
    print(t("status.backlog", lang, n=backlog["count"], kb=backlog["bytes"] // 1024,
            age=_ago(backlog["oldest_age_s"], lang) if backlog["count"] else "-"))
    print(t("status.last_sync", lang,
            when=_ago(time.time() - last_sync, lang) if last_sync else t("never", lang)))
    if not doc["upstream"]:
        print(t("status.no_upstream", lang))
    print(t("status.commands", lang, n=doc["commands_pending"]))
    print(t("status.alarms", lang, n=len(alarms)))
    for a in alarms:
        print(f"  {_pad(a['device'], 10)} {_alarm(a, lang)}"
              f"{t('when', lang, ago=_ago(time.time() - a['received_at'], lang))}")
    return rc


def _pad(s: object, width: int) -> str:
    """``s`` left-aligned in ``width`` terminal columns (Chinese takes two)."""
    text = str(s)
    return text + " " * max(0, width - cells(text))


def _alarm(row: dict[str, object], lang: str) -> str:
    """An alarm row in the clerk page's words (gateway/http/text.toml): the
    same sentence on the page and in the terminal, never the code."""
    from gateway.http.status import TEXT as PAGE
    from gateway.http.status import alarm_text

    body = row.get("body")
    if isinstance(body, dict) and "alarm" in body:
        return alarm_text(body, lang)
    return PAGE.t("alarm.unknown", lang, alarm=row.get("type"))


def _kind(kind: object, lang: str) -> str:
    """A device kind as the clerk's page names it (快递柜, 扫描枪); a kind
    the page does not know is shown as sent."""
    from gateway.http.status import TEXT as PAGE

    key = f"kind.{kind}"
    return PAGE.t(key, lang) if PAGE.has(key) else str(kind)


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
        print(f"{_pad(d['device'], 12)} {_pad(_kind(d['kind'], lang), 9)} {state} "
              f"{t('for', lang, d=_ago(d['for_s'], lang))}")
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
        print(t("error", lang, msg=t("drain.no_upstream", lang, file=str(args.config))), file=sys.stderr)
        return 2
    sent, left = service.drain(cfg, args.timeout)
    print(t("drained", lang, n=sent, left=left))
    return 0 if left == 0 else 1


def cmd_provision(args: argparse.Namespace) -> int:
    from gateway.provision import ProvisionError, provision

    lang = i18n.pick(args.lang)
    try:
        out = provision(args.inventory, args.out, args.listen, args.port, args.tls_port, args.keys,
                        args.notifier_key)
    except ProvisionError as e:
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        return 2
    print(t("provisioned", lang, n=out["devices"], dir=args.out))
    for todo in out["access"]:  # e.g. no group 'postedge': the gateway's unit would fail to start
        print(t("outlet.todo", lang, todo=todo), file=sys.stderr)
    return 0


def _read_password(args: argparse.Namespace, lang: str) -> str:
    """From a prompt (twice, not echoed) on a terminal, else the first line
    of stdin: never from argv, where ``ps`` and the shell history see it."""
    import getpass

    if sys.stdin.isatty():
        pw = getpass.getpass(t("clerk.prompt", lang, name=args.name))
        if getpass.getpass(t("clerk.again", lang)) != pw:
            print(t("error", lang, msg=t("clerk.mismatch", lang)), file=sys.stderr)
            raise SystemExit(2)
        return pw
    return sys.stdin.readline().rstrip("\r\n")


def cmd_clerk_add(args: argparse.Namespace) -> int:
    from gateway import clerk_accounts

    cfg = _load(args)
    lang = i18n.pick(args.lang)
    password = _read_password(args, lang)
    try:
        new = clerk_accounts.add(cfg, args.name, args.role, password)
    except ValueError as e:
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        return 2
    print(t("clerk.added" if new else "clerk.reset", lang, name=args.name, role=_role(args.role, lang)))
    return 0


def _role(role: object, lang: str) -> str:
    key = f"clerk.role.{role}"
    return t(key, lang) if i18n.TEXT.has(key) else str(role)


def cmd_clerk_disable(args: argparse.Namespace) -> int:
    from gateway import clerk_accounts

    lang = i18n.pick(args.lang)
    if not clerk_accounts.disable(_load(args), args.name):
        print(t("error", lang, msg=t("clerk.unknown", lang, name=args.name)), file=sys.stderr)
        return 1
    print(t("clerk.disabled", lang, name=args.name))
    return 0


def cmd_clerk_list(args: argparse.Namespace) -> int:
    from gateway import clerk_accounts

    lang = i18n.pick(args.lang)
    for c in clerk_accounts.listing(_load(args)):
        mark = " " + t("clerk.disabled_mark", lang) if c["disabled"] else ""
        print(f"{_pad(c['name'], 20)} {_role(c['role'], lang)}{mark}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from gateway.revoke import RevokeError, from_platform, reload_broker, revoke

    cfg = _load(args)
    lang = i18n.pick(args.lang)
    if cfg.web is None or not cfg.web.passwd_file:
        print(t("error", lang, msg=t("revoke_not_provisioned", lang, file=str(args.config))), file=sys.stderr)
        return 2
    if (args.device is None) == (not args.from_platform):
        print(t("error", lang, msg=t("revoke_which", lang)), file=sys.stderr)
        return 2
    passwd = Path(cfg.web.passwd_file)
    acl = Path(cfg.web.acl_file) if cfg.web.acl_file else passwd.with_name("acl")
    directory = Path(args.config).parent
    try:
        devices = [args.device] if args.device is not None else from_platform(cfg.db, directory)
    except RevokeError as e:
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        return 2
    if not devices:
        print(t("revoke_nothing", lang))
        return 0
    done = []
    for device in devices:
        try:
            done.append(revoke(directory, passwd, acl, device, cfg.db, cfg.broker.username,
                               outlet=cfg.outlet, gateway_id=cfg.broker.client_id))
        except RevokeError as e:
            print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
            if args.device is not None:
                return 2
    try:
        how = reload_broker(args.broker_pid)
    except (RevokeError, OSError) as e:
        for r in done:
            print(t("revoke_reload_failed", lang, device=r["device"], msg=describe(e, lang)), file=sys.stderr)
        return 1
    for r in done:
        if not r["reported"]:
            print(t("revoke_not_reported", lang, device=r["device"], db=str(cfg.db)), file=sys.stderr)
        if r["already"]:
            print(t("revoked_already", lang, device=r["device"],
                    at=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"])), how=how))
        else:
            print(t("revoked", lang, device=r["device"], n=len(r["cancelled"]), how=how))
    return 0 if len(done) == len(devices) else 1


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
    e.add_argument("--kind", required=True, choices=topics.KINDS, help="device kind")
    e.add_argument("files", nargs="+", metavar="FILE", help="one signed command (JSON) per file")
    e.set_defaults(func=cmd_enqueue)

    dr = gs.add_parser("drain", help="sync the whole backlog upstream now, then exit (gateway stopped)")
    dr.add_argument("--config", type=Path, required=True)
    dr.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    dr.set_defaults(func=cmd_drain)

    ck = gs.add_parser("clerk", help="clerk console accounts")
    cks = ck.add_subparsers(dest="clerk_cmd", required=True)
    ca = cks.add_parser("add", help="add a clerk, or reset one's password and role; the password is "
                        "read from a prompt, or the first line of stdin, never from the command line")
    ca.add_argument("name")
    ca.add_argument("--role", choices=("clerk", "supervisor"), default="clerk")
    ca.add_argument("--config", type=Path, required=True)
    ca.set_defaults(func=cmd_clerk_add)
    cd = cks.add_parser("disable", help="lock a clerk out and end their sessions (add enables again)")
    cd.add_argument("name")
    cd.add_argument("--config", type=Path, required=True)
    cd.set_defaults(func=cmd_clerk_disable)
    cl = cks.add_parser("list", help="clerk accounts and roles")
    cl.add_argument("--config", type=Path, required=True)
    cl.set_defaults(func=cmd_clerk_list)


    rv = gs.add_parser("revoke", help="revoke a device (a stolen handheld): its broker login goes at once")
    rv.add_argument("device", nargs="?", default=None, help="device id")
    rv.add_argument("--from-platform", action="store_true",
                    help="revoke the handhelds named by the platform's revoke commands the gateway holds")
    rv.add_argument("--config", type=Path, required=True, help="the provisioned gateway.toml")
    rv.add_argument("--broker-pid", type=int, default=None,
                    help="Mosquitto's pid to SIGHUP (default: systemctl reload postedge-mosquitto)")
    rv.set_defaults(func=cmd_revoke)

    p = gs.add_parser("provision", help="broker config, per-device credentials and ACL for an outlet")
    p.add_argument("inventory", type=Path, help="outlet inventory TOML (outlet, devices)")
    p.add_argument("--out", type=Path, required=True, help="folder to write into")
    p.add_argument("--listen", default="0.0.0.0", help="address the broker's TLS listener is on")
    p.add_argument("--port", type=int, default=1883, help="plaintext port, on 127.0.0.1 only (the gateway)")
    p.add_argument("--tls-port", type=int, default=8883, help="MQTT over TLS for the outlet LAN")
    p.add_argument("--keys", type=Path, default=None,
                   help="the platform's key file for this outlet (device id -> its own key section)")
    p.add_argument("--notifier-key", type=Path, default=None,
                   help="the outlet notifier key(s) from the platform (TOML [keys] \"<kv>\" = \"<hex>\")")
    p.set_defaults(func=cmd_provision)
