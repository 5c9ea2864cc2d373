# HAL port for ESP32-class boards. Not exercised by the test suite (no board
# here), but compiled by mpy-cross for xtensawin and armv6m like all firmware.

import os
import time

import machine

from drivers.hal.common import Clock, Indicator
from drivers.storage import FileStorage

NAME = "board"

# Pin map of the reference controller; overridden by config "pins".
PINS = {"buzzer": 25, "led_green": 26, "led_red": 27}
UARTS = {"rs485": (2, 17, 16), "scanner": (1, 4, 5)}  # id, tx, rx


class MachineUART:
    def __init__(self, name, baudrate):
        uid, tx, rx = UARTS[name]
        self.uart = machine.UART(uid, baudrate=baudrate, tx=tx, rx=rx, timeout=0)

    def write(self, data):
        return self.uart.write(data)

    def read(self, n):
        return self.uart.read(n) or b""

    def close(self):
        self.uart.deinit()


def uart(url, baudrate=9600):
    return MachineUART(url, baudrate)


def storage(root):
    return FileStorage(root)


class HardwareWatchdog:
    def __init__(self, timeout_ms):
        self.wdt = machine.WDT(timeout=timeout_ms)
        self.feeds = 0

    def feed(self):
        self.wdt.feed()
        self.feeds += 1

    def check(self):
        return False  # the hardware resets the board by itself


def watchdog(timeout_ms):
    return HardwareWatchdog(timeout_ms)


class PinIndicator(Indicator):
    TONES = {"good": (1, 80), "duplicate": (2, 60), "invalid": (3, 120), "wrong_outlet": (4, 60),
             "error": (5, 60), "alarm": (8, 200), "door_open": (1, 30)}

    def __init__(self):
        Indicator.__init__(self)
        self.buzzer = machine.Pin(PINS["buzzer"], machine.Pin.OUT)
        self.green = machine.Pin(PINS["led_green"], machine.Pin.OUT)
        self.red = machine.Pin(PINS["led_red"], machine.Pin.OUT)

    def _drive(self, pattern):
        beeps, ms = self.TONES[pattern]
        led = self.green if pattern == "good" else self.red
        led.value(1)
        for _ in range(beeps):
            self.buzzer.value(1)
            time.sleep_ms(ms)
            self.buzzer.value(0)
            time.sleep_ms(ms)
        led.value(0)


class WLAN:
    def __init__(self):
        import network

        self.wlan = network.WLAN(network.STA_IF)

    def connect(self, cfg=None):
        self.wlan.active(True)
        if cfg and not self.wlan.isconnected():
            self.wlan.connect(cfg["ssid"], cfg["password"])
        return self.wlan.isconnected()

    def isconnected(self):
        return self.wlan.isconnected()


# Embedded ports count from 2000-01-01; the protocol speaks Unix seconds.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
clock = Clock(EPOCH_OFFSET)
indicator = PinIndicator()
network = WLAN()


def urandom(n):
    return os.urandom(n)
