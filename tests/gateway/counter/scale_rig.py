"""The scale's end of a pty, for the counter tests."""

from __future__ import annotations

import os
import threading
import time


class PtyScale:
    """The scale's end of a pty: a thread that writes a script of frames."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)  # pyserial opens it by path, as it would /dev/ttyUSB0
        self.stop = threading.Event()
        self.received = b""
        self.thread: threading.Thread | None = None

    def play(self, frames: list[bytes], period: float = 0.03, repeat: bool = True) -> None:
        """Write ``frames`` in turn (again and again with ``repeat``);
        ``self.frames`` may be replaced while it plays: a new parcel."""
        self.frames = frames

        def run() -> None:
            i = 0
            while not self.stop.is_set() and (repeat or i < len(self.frames)):
                try:
                    os.write(self.master, self.frames[i % len(self.frames)])
                except OSError:
                    return
                i += 1
                time.sleep(period)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def drain(self) -> bytes:
        import select
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                self.received += os.read(self.master, 1024)
            except OSError:
                break
        return self.received

    def unplug(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()
        if self.master >= 0:
            os.close(self.master)
