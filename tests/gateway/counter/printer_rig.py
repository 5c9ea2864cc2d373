"""A printer's end of a pty: answers status queries like the real one and
keeps every byte it was sent."""

from __future__ import annotations

import os
import select
import threading


class PtyPrinter:
    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)
        self.answers = answers
        self.received = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                ready = select.select([self.master], [], [], 0.05)[0]
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                continue  # no one has the slave open yet (EIO), or it was closed
            self.received += data
            for q, a in self.answers.items():
                if self.received.endswith(q) and a:
                    os.write(self.master, a)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        os.close(self.master)


HS_OK = (b"\x02030,0,0,1245,000,0,0,0,000,0,0,0\x03\r\n"
         b"\x02001,0,0,0,1,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n")
HS_PAPER_OUT = HS_OK.replace(b"\x02030,0,0,", b"\x02030,1,0,", 1)
HS_HEAD_UP = HS_OK.replace(b"\x02001,0,0,0,", b"\x02001,0,1,0,", 1)
