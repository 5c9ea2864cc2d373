"""Multi-frame voting for reads from a camera.

A single camera frame can misread a 1D code that has no check digit of its
own meaning to us (Code 39, ITF, free-text Code 128) or whose check digit
collided. The scanner therefore accepts a read at once only when it is
trustworthy on its own (a passed S10 / EAN / GS1 check digit via the shared
validators, or an error-corrected 2D symbol), and otherwise when ``need``
of the last ``window`` frames agree on the same text and symbology.

Each accepted code is reported once; it can be reported again only after it
has been out of sight for ``forget_after`` frames (the courier scanned the
same parcel twice on purpose, e.g. after a correction), so holding the phone
over a label does not produce a stream of duplicate scans.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from handheld.decode import Code, decode_image


@dataclass(frozen=True)
class Accepted:
    """A read the voter accepted, and why: "check" (validator or 2D) or "votes"."""

    code: Code
    frame: int
    why: str
    votes: int


class Voter:
    def __init__(self, window: int = 5, need: int = 2, forget_after: int = 30) -> None:
        if need < 1 or window < need:
            raise ValueError("need 1 <= need <= window")
        self.window = window
        self.need = need
        self.forget_after = forget_after
        self._recent: deque[set[tuple[str, str]]] = deque(maxlen=window)
        self._last_seen: dict[tuple[str, str], int] = {}  # accepted key -> last frame it was read in
        self.frame = -1

    def feed(self, codes: list[Code]) -> list[Accepted]:
        """Add one frame's reads; returns the codes accepted by this frame (usually none)."""
        self.frame += 1
        keys = {(c.text, c.format) for c in codes}
        self._recent.append(keys)
        for k in [k for k, f in self._last_seen.items() if self.frame - f > self.forget_after]:
            del self._last_seen[k]
        out: list[Accepted] = []
        for c in codes:
            key = (c.text, c.format)
            if key in self._last_seen:
                self._last_seen[key] = self.frame
                continue
            votes = sum(1 for frame_keys in self._recent if key in frame_keys)
            if c.trusted:
                out.append(Accepted(c, self.frame, "check", votes))
            elif votes >= self.need:
                out.append(Accepted(c, self.frame, "votes", votes))
            else:
                continue
            self._last_seen[key] = self.frame
        return out

    def reset(self) -> None:
        self._recent.clear()
        self._last_seen.clear()


def scan(frames: Iterable[np.ndarray], voter: Voter | None = None,
         decode: Callable[[np.ndarray], list[Code]] = decode_image) -> Iterator[Accepted]:
    """Decode a stream of frames and yield the reads the voter accepts, as they are accepted."""
    voter = voter or Voter()
    for img in frames:
        yield from voter.feed(decode(img))
