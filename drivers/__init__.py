# Hardware drivers in the MicroPython subset, shared by the device firmware
# and the CPython roles that drive the same parts: serial scan engines, lock
# boards, the HAL ports (board, unix port, host) and atomic file storage.
