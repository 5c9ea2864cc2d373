# Small-record storage on the device filesystem (LittleFS on ESP32, the host
# filesystem on the unix port and CPython). A write goes to a temporary file
# that is then renamed over the old one, so a power cut leaves either the old
# or the new record, never a torn one.

import os


class FileStorage:
    def __init__(self, root):
        self.root = root
        try:
            os.mkdir(root)
        except OSError:
            pass

    def _path(self, name):
        return self.root + "/" + name

    def read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write(self, name, data):
        tmp = self._path(name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fsync"):
                os.fsync(f.fileno())
        os.rename(tmp, self._path(name))

    def delete(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass
