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

Messages live here rather than in ``postedge/i18n.py`` so this feature can
land without touching the shared catalogue; they use the same language
choice (``i18n.pick``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from postedge import i18n

MESSAGES: dict[str, dict[str, str]] = {
    "bad_image": {"zh": "无法读取图像 {file}：{why}", "en": "cannot read image {file}: {why}"},
    "why.missing": {"zh": "文件不存在", "en": "no such file"},
    "why.unreadable": {"zh": "无法打开文件", "en": "the file cannot be opened"},
    "why.not_image": {"zh": "不是图像，或文件已损坏", "en": "not an image, or the file is corrupt"},
    "summary": {"zh": "共 {n} 张图像：{found} 张识别到条码，{none} 张没有条码，{bad} 张无法读取",
                "en": "{n} images: {found} with codes, {none} without, {bad} unreadable"},
    "source_error": {"zh": "视频源出错：{why}（{detail}）", "en": "video source failed: {why} ({detail})"},
    "why.open": {"zh": "无法打开摄像头、视频文件或视频流",
                 "en": "cannot open the camera, video file or stream"},
    "why.lost": {"zh": "摄像头已断开或不再输出画面",
                 "en": "the camera disconnected or stopped giving frames"},
}


def msg(key: str, lang: str, **kw: object) -> str:
    return MESSAGES[key][lang].format(**kw)


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
    h = sub.add_parser("handheld", help="courier handheld tools: decode barcodes in images and video")
    hsub = h.add_subparsers(dest="hh", required=True)
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
