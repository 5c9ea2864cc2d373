"""``postedge handheld ...``: the courier handheld's scanning tools.

``decode IMAGE...`` prints one JSON object per image that holds a code,
``{"file": ..., "codes": [{"text": ..., "format": ..., "kind": ...}]}``
(``kind`` is the validator's verdict, null when no check digit vouches for
the text). An image without a code prints nothing. A missing, corrupt or
non-image file gets a message on stderr in the courier's language, is
counted, and the other images are still decoded; the exit code is then 1.
Unless ``--json-only``, a one-line summary goes to stderr at the end.

``scan SOURCE`` reads a camera index, video file or stream URL and prints
each code the multi-frame voter accepts, one JSON object per line.

``run --config handheld.toml`` runs the app a courier carries
(``handheld/main.py``); its exit codes are those of every postedge command:
0 after a clean stop, 2 for a config problem, 3 for the machine's (a port
taken). Messages are the ``handheld.*`` entries of ``postedge/text.toml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from postedge import i18n


def msg(key: str, lang: str, **kw: object) -> str:
    return i18n.t(f"handheld.{key}", lang, **kw)


def cmd_run(args: argparse.Namespace) -> int:
    """The app until a signal: exit 0 after a clean stop, 2 for a config
    problem, 3 when the machine refuses (the UI port taken)."""
    from common.config import ConfigError, describe
    from handheld.main import run

    lang = i18n.pick(args.lang)

    def started(device: str, url: str) -> None:
        print(msg("running", lang, device=device, url=url), flush=True)

    try:
        return run(args.config, args.log_level, started)
    except ConfigError as e:
        if isinstance(e.__cause__, OSError):  # the UI port taken: the machine's problem
            why = describe(e, lang)
            print(i18n.t("error", lang, msg=msg("cannot_start", lang, why=why)), file=sys.stderr)
            return 3
        print(i18n.t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        return 2
    except OSError as e:
        print(i18n.t("error", lang, msg=msg("cannot_start", lang, why=e)), file=sys.stderr)
        return 3


def cmd_decode(args: argparse.Namespace) -> int:
    from handheld.decode import decode_image
    from handheld.sources import SourceError, load_image

    lang = i18n.pick(args.lang)
    found = none = bad = 0
    for path in args.images:
        try:
            img = load_image(path)
        except SourceError as e:
            bad += 1
            print(msg("bad_image", lang, file=path, why=msg(f"why.{e.reason}", lang)), file=sys.stderr)
            continue
        codes = decode_image(img, thorough=True)
        if not codes:
            none += 1
            continue
        found += 1
        print(json.dumps({"file": path, "codes": [c.to_json() for c in codes]}, ensure_ascii=False),
              flush=True)
    if not args.json_only:
        print(msg("summary", lang, n=len(args.images), found=found, none=none, bad=bad), file=sys.stderr)
    return 1 if bad else 0


def cmd_scan(args: argparse.Namespace) -> int:
    from handheld.sources import SourceError, VideoSource
    from handheld.voting import Voter, scan

    lang = i18n.pick(args.lang)
    try:
        with VideoSource(args.source) as src:
            frames = (f.image for f in src.frames(args.frames))
            for a in scan(frames, Voter(window=args.window, need=args.need)):
                print(json.dumps({"frame": a.frame, "why": a.why, "votes": a.votes, **a.code.to_json()},
                                 ensure_ascii=False), flush=True)
    except SourceError as e:
        print(msg("source_error", lang, why=msg(f"why.{e.reason}", lang), detail=e.detail), file=sys.stderr)
        return 1
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    """Pair with the outlet from the QR code on the clerk's page (``handheld/pairing.py``)."""
    from handheld.pairing import TEXT, PairFailed, pair, scan_image
    from handheld.sources import SourceError

    lang = i18n.pick(args.lang)
    try:
        text = scan_image(args.image) if args.image else args.code
        if not text:
            raise PairFailed("not_pair_code")
        done = pair(text, args.config)
    except SourceError as e:
        why = msg("bad_image", lang, file=args.image, why=msg(f"why.{e.reason}", lang))
        print(TEXT.t("failed", lang, why=why), file=sys.stderr)
        return 2
    except PairFailed as e:
        print(TEXT.t("failed", lang, why=e.message[lang]), file=sys.stderr)
        return 2 if e.reason in ("not_pair_code", "bad_url", "no_code") else 3
    print(TEXT.t("paired", lang, **done))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    h = sub.add_parser("handheld", help="courier handheld: run the app, decode barcodes in images and video")
    hsub = h.add_subparsers(dest="hh", required=True)
    r = hsub.add_parser("run", help="run the courier handheld app until stopped (Ctrl-C)")
    r.add_argument("--config", required=True, help="the handheld's TOML config (see docs/handheld.md)")
    r.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    r.set_defaults(func=cmd_run)
    d = hsub.add_parser("decode", help="decode barcodes in still images; one JSON line per image with codes")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    d.add_argument("--json-only", action="store_true", help="no summary line on stderr")
    d.set_defaults(func=cmd_decode)
    s = hsub.add_parser("scan", help="decode a camera, video file or stream with multi-frame voting")
    s.add_argument("source", metavar="SOURCE", help="camera index (0), video file or stream URL")
    s.add_argument("--frames", type=int, help="stop after this many frames")
    s.add_argument("--window", type=int, default=5, help="frames a vote looks back over")
    s.add_argument("--need", type=int, default=2, help="agreeing frames to accept an unchecked 1D read")
    s.set_defaults(func=cmd_scan)
    p = hsub.add_parser("pair", help="pair with the outlet from the QR code on the clerk's page")
    p.add_argument("code", nargs="?", default="", metavar="TEXT",
                   help="the scanned pairing code (PE-PAIR:...)")
    p.add_argument("--image", default=None, help="a photo of the clerk's screen to read the code from")
    p.add_argument("--config", type=Path, default=Path("handheld.toml"),
                   help="the handheld's config file to write (its own settings are kept)")
    p.set_defaults(func=cmd_pair)
