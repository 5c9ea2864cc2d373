"""Where the handheld's frames come from: still images and OpenCV ``VideoCapture``.

A courier's phone camera is not a reliable peripheral: USB cameras get
unplugged, Android hands the camera to another app, an RTSP stream from a
counter camera drops. OpenCV reports all of that the same quiet way
(``read()`` returns ``(False, None)`` or an empty array, forever), so this
module turns it into errors with a reason a person can act on:

- ``SourceError("open", ...)``: the device, file or URL could not be opened;
- ``SourceError("lost", ...)``: a live source gave ``max_failures`` bad
  frames in a row (after ``reopen`` attempts to reconnect);
- ``SourceError("missing" | "unreadable" | "not_image", ...)`` for still images.

A video *file* ending is not an error: iteration just stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class SourceError(Exception):
    """A frame source failed; ``reason`` is a short code, the message says what and where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """A still image as BGR, or SourceError saying why not (``cv2.imread`` only returns None)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SourceError("missing", f"{p}: no such file") from None
    except IsADirectoryError:
        raise SourceError("unreadable", f"{p}: is a directory") from None
    except OSError as e:
        raise SourceError("unreadable", f"{p}: {e.strerror or e}") from None
    if not data:
        raise SourceError("not_image", f"{p}: empty file")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise SourceError("not_image", f"{p}: not an image OpenCV can decode, or the file is corrupt")
    return img


@dataclass(frozen=True)
class Frame:
    """One frame and where it came from: index from the start and a monotonic timestamp."""

    index: int
    t: float
    image: np.ndarray


def parse_spec(spec: str | int) -> str | int:
    """"0" → device index 0; anything else is a file path or a stream URL, passed to OpenCV as is."""
    if isinstance(spec, int):
        return spec
    return int(spec) if spec.strip().isdigit() else spec


def _is_live(spec: str | int) -> bool:
    return isinstance(spec, int) or "://" in spec


CaptureFactory = Callable[[str | int], "cv2.VideoCapture"]


class VideoSource:
    """Frames from a camera index, a video file or a stream URL.

    ``capture_factory`` exists for tests (a fake camera that dies mid-run)
    and for platforms needing an API preference (``cv2.CAP_V4L2``).
    ``max_failures`` consecutive empty reads mean the camera is gone; a live
    source is reopened up to ``reopen`` times (with ``reopen_wait_s`` between)
    before that is reported, a file is treated as ended.
    """

    def __init__(self, spec: str | int, *, max_failures: int = 15, reopen: int = 1,
                 reopen_wait_s: float = 0.5, capture_factory: CaptureFactory | None = None) -> None:
        self.spec = parse_spec(spec)
        self.live = _is_live(self.spec)
        self.max_failures = max_failures
        self.reopen = reopen
        self.reopen_wait_s = reopen_wait_s
        self._factory: CaptureFactory = capture_factory or cv2.VideoCapture
        self.cap = self._open()
        self.frames_read = 0
        self.failures = 0

    def _open(self) -> cv2.VideoCapture:
        cap = self._factory(self.spec)
        if cap is None or not cap.isOpened():
            raise SourceError("open", f"cannot open video source {self.spec!r}")
        return cap

    def read(self) -> np.ndarray | None:
        """The next good frame; None at the end of a file; SourceError when a live source is gone."""
        bad = 0
        reopened = 0
        while True:
            ok, img = self.cap.read()
            if ok and img is not None and img.size > 0:
                self.frames_read += 1
                return img
            bad += 1
            self.failures += 1
            if not self.live:
                # A file: a bad frame at the end is the end; in the middle, skip a few then give up.
                if self.frames_read == 0 and bad == 1:
                    raise SourceError("lost", f"video {self.spec!r} has no readable frames")
                if bad >= min(3, self.max_failures):
                    return None
                continue
            if bad >= self.max_failures:
                if reopened >= self.reopen:
                    raise SourceError("lost", f"camera {self.spec!r} stopped giving frames "
                                              f"({bad} empty reads in a row, reopened {reopened}x)")
                reopened += 1
                self.cap.release()
                time.sleep(self.reopen_wait_s)
                try:
                    self.cap = self._open()
                except SourceError:
                    raise SourceError("lost", f"camera {self.spec!r} disappeared, cannot reopen") from None
                bad = 0

    def frames(self, limit: int | None = None) -> Iterator[Frame]:
        i = 0
        while limit is None or i < limit:
            img = self.read()
            if img is None:
                return
            yield Frame(i, time.monotonic(), img)
            i += 1

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        self.cap.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
