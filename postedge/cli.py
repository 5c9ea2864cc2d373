"""The ``postedge`` command. Subcommands appear as their features land."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common.config import describe
from postedge import helptext, i18n


def cmd_validate(args: argparse.Namespace) -> int:
    from common.barcode_words import detail_text, reason_text
    from protocol import barcodes

    lang = i18n.pick(args.lang)
    worst = 0
    for code in args.codes:
        v = barcodes.classify(code)
        if args.json:
            print(json.dumps({"input": code, **v}, ensure_ascii=False))
        elif v["ok"]:
            kind = i18n.t(f"kind.{v['kind']}", lang)
            print(i18n.t("valid", lang, kind=kind, value=v["value"]))
            for p in v.get("problems", ()):
                print(i18n.t("ignored", lang, ai=p["ai"], reason_text=reason_text(p["reason"], lang),
                             detail=detail_text(p["detail"], lang)))
        else:
            print(i18n.t("invalid", lang, reason_text=reason_text(v["reason"], lang),
                         detail=detail_text(v["detail"], lang)))
        if not v["ok"]:
            worst = 1
    return worst


def cmd_demo(args: argparse.Namespace) -> int:
    from postedge.demo import run_demo

    return run_demo(i18n.pick(args.lang), args.workdir)


def cmd_firmware(args: argparse.Namespace) -> int:
    from postedge import firmware_cmd as fw

    if args.fw == "bundle":
        made = fw.bundle(args.out, args.arch, args.app)
        print(json.dumps({"bundle": str(args.out), "arch": args.arch, "files": len(made)}))
        return 0
    if args.fw == "package-json":
        print(fw.package_json(args.version), end="")
        return 0
    if args.fw == "manifest":
        print(fw.manifest_py(), end="")
        return 0
    # deploy
    if args.device is not None:
        # The configuration `postedge outlet init` wrote for this device, and its app.
        lang = i18n.pick(args.lang)
        try:
            args.config, args.app = fw.device_config(args.outlet_dir, args.device)
        except ValueError as e:
            print(i18n.t("error", lang, msg=describe(e, lang)), file=sys.stderr)
            return 2
    made = fw.bundle(args.out, args.arch, args.app)
    if args.dry_run:  # every file that goes to the board
        for f in [*made, args.out / "main.py", *([args.config] if args.config else [])]:
            print(f"# {f}")
    rc = 0
    for cmd in fw.deploy_commands(args.out, args.port, args.config):
        print(" ".join(cmd))
        if not args.dry_run:
            rc = subprocess.run(cmd).returncode
            if rc and cmd[4:5] != ["mkdir"]:  # mkdir fails harmlessly when :lib exists
                return rc
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postedge", description="Edge software for rural post outlets.")
    p.add_argument("--lang", choices=i18n.LANGS, help="message language (default: from LANG)")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check parcel and product barcodes (S10, EAN/UPC, GS1, "
                                        "China Post domestic); exit 1 if any is invalid")
    v.add_argument("codes", nargs="+", metavar="CODE", help="scanned text, AIM prefix allowed")
    v.add_argument("--json", action="store_true", help="one JSON verdict per line")
    v.set_defaults(func=cmd_validate)

    from postedge import gateway_cmd

    gateway_cmd.add_parser(sub)
    from postedge import outlet_cmd

    outlet_cmd.add_parser(sub)
    from postedge import handheld_cmd

    handheld_cmd.add_parser(sub)

    from postedge import central_cmd

    central_cmd.add_parser(sub)
    from postedge import sim_cmd

    sim_cmd.add_parser(sub)

    f = sub.add_parser("firmware", help="package and deploy the device firmware (locker, counter scanner)")
    fsub = f.add_subparsers(dest="fw", required=True)
    fb = fsub.add_parser("bundle", help="compile device firmware to .mpy with mpy-cross")
    fb.add_argument("out", type=Path, help="output folder (mirrors the board's filesystem)")
    fb.add_argument("--arch", default="xtensawin", help="mpy-cross -march (xtensawin, armv6m, ...)")
    fb.add_argument("--app", choices=("locker", "counter"), default="locker", help="what main.py starts")
    fp = fsub.add_parser("package-json", help="print the mip package.json")
    fp.add_argument("--version", default="0.1.0")
    fsub.add_parser("manifest", help="print manifest.py for freezing into a board image")
    fd = fsub.add_parser("deploy", help="bundle and copy to a board with mpremote")
    fd.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    fd.add_argument("--config", type=Path, help="the device's config.json to copy")
    fd.add_argument("--device", help="a device of the outlet: the config `outlet init` wrote for it "
                                     "(OUTLET_DIR/devices/DEVICE.json) and its app")
    fd.add_argument("--outlet-dir", type=Path, default=Path("/etc/postedge"),
                    help="the folder `outlet init` wrote (default /etc/postedge)")
    fd.add_argument("--out", type=Path, default=Path("build/firmware"))
    fd.add_argument("--arch", default="xtensawin")
    fd.add_argument("--app", choices=("locker", "counter"), default="locker", help="what main.py starts")
    fd.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    f.set_defaults(func=cmd_firmware)

    d = sub.add_parser("demo", help="run one outlet: locker firmware on MicroPython → Mosquitto → "
                                    "gateway → SQLite; a deposit, a pickup and a gateway SIGKILL")
    d.add_argument("--workdir", type=Path, help="keep broker, database and logs here")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lang = helptext.lang_from_argv(argv)
    with helptext.argparse_words(lang):  # argparse's own words, while it builds and parses
        parser = helptext.localize(build_parser(), lang)
        args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
