"""The installable app's icons (handheld/static/icon-192.png, icon-512.png), drawn here.

Why drawn and not downloaded: nothing in this project comes from outside, and an icon
is a few shapes. Run ``python -m handheld.icons`` after changing the drawing; the PNGs
are committed (handheld/webui.py serves them, the web manifest names them).
The drawing: the UI's blue, a white parcel with a barcode on it, all inside the
central 80 % so a "maskable" crop by the launcher keeps it whole.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

BLUE = (138, 79, 11)  # BGR of #0b4f8a, the page's --blue
WHITE = (255, 255, 255)
SIZES = (192, 512)


def draw(n: int) -> np.ndarray:
    """One square icon of ``n`` pixels."""
    img = np.full((n, n, 3), BLUE, np.uint8)
    s = n / 192
    box = (int(46 * s), int(58 * s), int(146 * s), int(140 * s))
    cv2.rectangle(img, box[:2], box[2:], WHITE, -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(86 * s), int(58 * s)), (int(106 * s), int(76 * s)), BLUE, -1)  # the tape
    x = 58.0
    for w in (3, 1, 2, 1, 3, 2, 1, 1, 3, 1, 2, 3, 1, 2, 1, 3):  # a barcode
        cv2.rectangle(img, (int(x * s), int(92 * s)), (int((x + w * 1.6) * s), int(126 * s)), BLUE, -1)
        x += w * 1.6 + 2.2
    return img


def write(folder: Path) -> list[Path]:
    out = []
    for n in SIZES:
        p = folder / f"icon-{n}.png"
        if not cv2.imwrite(str(p), draw(n)):
            raise OSError(f"cannot write {p}")
        out.append(p)
    return out


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("static")):
        print(p)
