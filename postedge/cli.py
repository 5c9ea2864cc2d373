"""The ``postedge`` command. Subcommands appear as their features land."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from postedge import i18n


def cmd_validate(args: argparse.Namespace) -> int:
    from firmware.protocol import barcodes

    lang = i18n.pick(args.lang)
    worst = 0
    for code in args.codes:
        v = barcodes.classify(code)
        if args.json:
            print(json.dumps({"input": code, **v}, ensure_ascii=False))
        elif v["ok"]:
            kind = i18n.t(f"kind.{v['kind']}", lang)
            print(i18n.t("valid", lang, kind=kind, value=v["value"]))
        else:
            print(i18n.t("invalid", lang, reason_text=i18n.t(f"reason.{v['reason']}", lang),
                         detail=v["detail"]))
        if not v["ok"]:
            worst = 1
    return worst


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, GatewayConfig
    from gateway.ingest import Faults, Ingest

    lang = i18n.pick(args.lang)
    try:
        cfg = GatewayConfig.load(args.config)
    except ConfigError as e:
        print(i18n.t("error", lang, msg=str(e)), file=sys.stderr)
        return 2
    faults = Faults(hold_before_commit_s=args.hold_before_commit,
                    exit_before_ack=args.exit_before_ack)
    ing = Ingest(cfg, faults)
    # systemd stops with SIGTERM: finish the group in hand, then exit cleanly.
    signal.signal(signal.SIGTERM, lambda *_: ing.stop())
    signal.signal(signal.SIGINT, lambda *_: ing.stop())
    try:
        ing.run()
    finally:
        ing.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from postedge.demo import run_demo

    return run_demo(i18n.pick(args.lang), args.events, args.workdir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postedge", description="Edge software for rural post outlets.")
    p.add_argument("--lang", choices=i18n.LANGS, help="message language (default: from LANG)")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check parcel and product barcodes (S10, EAN/UPC, GS1, "
                                        "China Post domestic); exit 1 if any is invalid")
    v.add_argument("codes", nargs="+", metavar="CODE", help="scanned text, AIM prefix allowed")
    v.add_argument("--json", action="store_true", help="one JSON verdict per line")
    v.set_defaults(func=cmd_validate)

    g = sub.add_parser("gateway", help="run the outlet gateway's ingest loop")
    g.add_argument("--config", type=Path, required=True, help="gateway TOML file")
    g.add_argument("--hold-before-commit", type=float, default=0.0, metavar="SECONDS",
                   help="fault test hook: wait this long between receiving and committing")
    g.add_argument("--exit-before-ack", action="store_true",
                   help="fault test hook: exit after the first commit, before acking")
    g.set_defaults(func=cmd_gateway)

    d = sub.add_parser("demo", help="run the thin slice: MicroPython locker → Mosquitto → "
                                    "gateway → SQLite, with a gateway SIGKILL")
    d.add_argument("--events", type=int, default=5, help="events the locker sends")
    d.add_argument("--workdir", type=Path, help="keep broker, database and logs here")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
