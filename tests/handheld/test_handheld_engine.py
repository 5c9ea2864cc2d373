"""The handheld's serial scan engine:
a simulated GM65 in continuous mode served over TCP and opened by the app
through pyserial's ``socket://`` handler, the same driver code the counter
firmware runs on MicroPython. A scan reaches the app's verdicts; an engine
unplugged mid-shift is reported and the app keeps running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.broker import Mosquitto
from handheld.app import HandheldApp
from simulator.scan_engine_sim import SimScanEngine
from tests.handheld.conftest import ACCOUNTS, Gateway
from tests.handheld.test_handheld_app import GOOD, gnss_ready, make_config
from tests.waiting import within


@pytest.fixture
def engine() -> Iterator[SimScanEngine]:
    e = SimScanEngine("gm65", suffix="cr", aim=True, continuous=True)
    try:
        yield e
    finally:
        e.close()


@pytest.mark.slow
def test_serial_engine_scans_reach_the_app_and_an_unplug_is_reported(
        tmp_path: Path, engine: SimScanEngine) -> None:
    hbroker = Mosquitto(tmp_path / "broker", ACCOUNTS)
    hbroker.start()
    port = engine.serve_tcp()
    cfg = make_config(tmp_path, hbroker.port, scan_engine=f"socket://127.0.0.1:{port}",
                      scan_engine_family="gm65")
    gw = Gateway(hbroker.port)
    app = HandheldApp(cfg)
    app.gnss = gnss_ready()
    app.start()
    try:
        assert within(lambda: app.scan_engine_status == "ok"), app.scan_engine_status
        engine.present(GOOD, "code128")
        assert within(lambda: (app.last_scan or {}).get("value") == GOOD), app.last_scan
        assert app.last_scan["verdict"] == "good"
        time.sleep(0.5)  # past the different-symbol window (0.3 s)
        engine.present("RB123456784GB", "code128")  # wrong S10 check digit
        assert within(lambda: (app.last_scan or {}).get("verdict") == "invalid"), app.last_scan
        engine.close()  # unplugged
        assert within(lambda: (app.scan_engine_status or "ok") != "ok", 20), app.scan_engine_status
        assert app.status()["scan_engine"] != "ok"
    finally:
        app.stop()
        gw.close()
        hbroker.kill()


def test_camera_frames_are_scanned_with_voting(tmp_path: Path) -> None:
    """A camera (a folder of frames, cycled, as a test camera) pointed at a
    parcel label: the code is read from the frames, accepted by the voter and
    judged like any scan."""
    import cv2
    import numpy as np

    from simulator.imagegen import label_image

    frames = tmp_path / "frames"
    frames.mkdir()
    img, _ = label_image([(GOOD, "Code128")], np.random.default_rng(3))
    cv2.imwrite(str(frames / "label.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    hbroker = Mosquitto(tmp_path / "broker", ACCOUNTS)
    hbroker.start()
    cfg = make_config(tmp_path, hbroker.port, camera=str(frames), camera_scan=True)
    app = HandheldApp(cfg)
    app.gnss = gnss_ready()
    app.start()
    try:
        assert within(lambda: (app.last_scan or {}).get("value") == GOOD, 20), \
            (app.last_scan, app.camera.error)
        assert app.last_scan["verdict"] == "good"
    finally:
        app.stop()
        hbroker.kill()
