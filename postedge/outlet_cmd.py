"""``postedge outlet ...``: an outlet from one description:
``init``, ``check``, ``add-device``, ``retire-device``. The work is in
``gateway/outlet/``; this says it in the clerk's language.

Exit codes: 0 done, 2 a configuration that cannot be used (the
description), 3 the box (not root for --install, a part not running)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import describe
from postedge import i18n
from postedge.i18n import t


def _err(lang: str, key: str, **kw: object) -> None:
    print(t("error", lang, msg=t(key, lang, **kw)), file=sys.stderr)


def _init(args: argparse.Namespace, lang: str) -> int:
    from gateway.outlet import build, spec, system

    try:
        desc = spec.load(args.spec)
    except spec.ConfigError as e:
        _err(lang, "outlet.spec_error", msg=describe(e, lang))
        return 2
    out = args.out.resolve()
    if args.install is None:  # neither flag: as the folder was set up (an installed outlet stays one)
        args.install = build.installed(out)
    if args.install:
        if not system.is_root():
            _err(lang, "outlet.install_needs_root")
            return 3
        try:
            for step in (*system.broker_package(), *system.accounts()):
                print(t("outlet.installed", lang, step=step))
            system.service_can_run(build.postedge_bin())
        except system.InstallError as e:
            _err(lang, "outlet.install_failed", msg=describe(e, lang))
            return 3
    try:
        res = build.init(desc, args.spec, out, install=args.install, dry_run=args.dry_run)
    except build.OutletError as e:
        _err(lang, "outlet.spec_error", msg=describe(e, lang))
        return 2
    except OSError as e:  # e.g. an installed folder's 0600 files, not as root
        _err(lang, "outlet.check.unreadable", msg=describe(e, lang))
        return 3
    if res.changes:
        print(t("outlet.would_change" if args.dry_run else "outlet.changed", lang, out=str(out),
                n=len(res.changes)))
        for what, rel in res.changes:
            print(t("outlet.change", lang, what=t(f"outlet.what.{what}", lang), path=rel))
    else:
        print(t("outlet.unchanged", lang, out=str(out), spec=str(args.spec)))
    print(t(f"outlet.keys_from.{res.keys_from}", lang))
    if res.revoked:
        print(t("outlet.revoked", lang, devices=", ".join(res.revoked)))
    if args.dry_run:
        return 0
    running = True
    if args.install:
        try:
            steps, running = system.units(out, restart=bool(res.changes))
        except system.InstallError as e:
            _err(lang, "outlet.install_failed", msg=describe(e, lang))
            return 3
        for s in steps:
            print(t("outlet.installed", lang, step=s))
        for todo in res.access:  # what provision could not hand to the service accounts
            print(t("outlet.todo", lang, todo=todo))
        if not running:
            _err(lang, "outlet.no_systemd")
            for part, cmd in build.start_commands(out, installed=True):
                print(t("outlet.start_line", lang, part=t(f"outlet.part.{part}", lang), cmd=cmd))
    else:
        print(t("outlet.start_header", lang))
        for part, cmd in build.start_commands(out):
            print(t("outlet.start_line", lang, part=t(f"outlet.part.{part}", lang), cmd=cmd))
    print(t("outlet.devices_header", lang))
    handhelds = {h.id for h in desc.handhelds}
    for dev, cmd in build.device_commands(desc, out, res.revoked):
        line = t("outlet.handheld_copy", lang, path=cmd) if dev in handhelds else cmd
        print(t("outlet.start_line", lang, part=dev, cmd=line))
    print(t("outlet.clerk", lang, url=f"https://{res.address}:{desc.web.port}/"))
    return 0 if running else 3


def cmd_init(args: argparse.Namespace) -> int:
    return _init(args, i18n.pick(args.lang))


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.outlet import check

    lang = i18n.pick(args.lang)
    found = check.check(args.spec, args.out)
    for f in found:
        print(t("outlet.check.note" if f.exit == 0 else "outlet.check.line", lang,
                msg=t(f"outlet.check.{f.key}", lang, **f.params)))
    rc = check.exit_code(found)
    if rc == 0:
        print(t("outlet.check.ok", lang, out=str(args.out.resolve())))
    return rc


def cmd_add_device(args: argparse.Namespace) -> int:
    from gateway.outlet import devices, spec

    lang = i18n.pick(args.lang)
    try:
        devices.add(args.spec, args.kind, args.device, args.like, args.uart)
    except spec.ConfigError as e:
        _err(lang, "outlet.spec_error", msg=describe(e, lang))
        return 2
    except devices.DeviceError as e:
        _err(lang, "outlet.device_error", msg=describe(e, lang))
        return 2
    print(t("outlet.added_device", lang, device=args.device, kind=t(f"outlet.kind.{args.kind}", lang),
            spec=str(args.spec)))
    return _init(args, lang)


def cmd_retire_device(args: argparse.Namespace) -> int:
    from gateway.outlet import devices

    lang = i18n.pick(args.lang)
    try:
        r = devices.retire(args.out, args.device, args.broker_pid)
    except devices.DeviceError as e:
        _err(lang, "outlet.device_error", msg=describe(e, lang))
        return 2
    if "reload_error" in r:
        _err(lang, "outlet.reload_failed", device=args.device, msg=r["reload_error"])
        return 3
    key = "outlet.retired_already" if r["already"] else "outlet.retired"
    print(t(key, lang, device=args.device, n=len(r["cancelled"]), how=r["reload"]))
    return 0


def cmd_courier(args: argparse.Namespace) -> int:
    import time

    from gateway.outlet import couriers, spec

    lang = i18n.pick(args.lang)
    try:
        r = couriers.issue(spec.load(args.spec), args.out, args.courier, args.days)
    except spec.ConfigError as e:
        _err(lang, "outlet.spec_error", msg=describe(e, lang))
        return 2
    except couriers.CourierError as e:
        _err(lang, "outlet.device_error", msg=describe(e, lang))
        return 2
    print(t("outlet.courier_queued", lang, courier=args.courier, lockers=", ".join(r["lockers"]),
            until=time.strftime("%Y-%m-%d", time.localtime(r["exp"]))))
    print(t("outlet.courier_badge", lang, badge=r["badge"]))
    return 0


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("/etc/postedge"),
                   help="folder the outlet's files go to (default /etc/postedge)")
    p.add_argument("--install", action=argparse.BooleanOptionalAction, default=None,
                   help="as root: create the postedge account and folders, install and start the "
                        "systemd units; --no-install: files only, and the commands to start each part "
                        "(default: as the folder was set up, else --no-install)")
    p.add_argument("--dry-run", action="store_true", help="say what would change, write nothing")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    o = sub.add_parser("outlet", help="set up an outlet from one description (OUTLET.toml)")
    os_ = o.add_subparsers(dest="outlet_cmd", required=True)

    i = os_.add_parser("init", help="write every file the outlet runs on (again: changes only what changed)")
    i.add_argument("spec", type=Path, metavar="OUTLET.toml", help="the outlet's description")
    _init_args(i)
    i.set_defaults(func=cmd_init)

    c = os_.add_parser("check", help="what is missing or wrong; exit 0 ok, 2 configuration, 3 the box")
    c.add_argument("spec", type=Path, metavar="OUTLET.toml")
    c.add_argument("--out", type=Path, default=Path("/etc/postedge"))
    c.set_defaults(func=cmd_check)

    a = os_.add_parser("add-device", help="add a locker, scanner or handheld to the description, then init")
    a.add_argument("spec", type=Path, metavar="OUTLET.toml")
    a.add_argument("device", help="the new device's id (1-32 of a-z 0-9 _ -)")
    a.add_argument("--kind", choices=("locker", "scanner", "handheld"), required=True)
    a.add_argument("--like", default=None, help="a locker whose board and compartment layout it has")
    a.add_argument("--uart", default=None, help="the lock board's (or scan engine's) serial port")
    _init_args(a)
    a.set_defaults(func=cmd_add_device)

    k = os_.add_parser("courier", help="a pilot outlet: issue a courier's badge; the credential reaches "
                       "every locker through the gateway")
    k.add_argument("spec", type=Path, metavar="OUTLET.toml")
    k.add_argument("courier", help="the courier's id (1-32 of a-z 0-9 _ -)")
    k.add_argument("--days", type=int, default=30, help="how long the badge opens the lockers")
    k.add_argument("--out", type=Path, default=Path("/etc/postedge"))
    k.set_defaults(func=cmd_courier)

    r = os_.add_parser("retire-device", help="retire a device: its login and key stop working at once")
    r.add_argument("device")
    r.add_argument("--out", type=Path, default=Path("/etc/postedge"))
    r.add_argument("--broker-pid", type=int, default=None,
                   help="Mosquitto's pid to SIGHUP (default: systemctl reload postedge-mosquitto)")
    r.set_defaults(func=cmd_retire_device)
