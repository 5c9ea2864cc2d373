"""Photo evidence: quality gate, JPEG, hashes, duplicate rule and the evidence record.

Images are real pictures drawn with OpenCV (a village scene with a notice board and
text), then degraded the way a phone camera degrades them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import serial

from handheld import evidence, photo
from handheld.evidence import (
    BadInputRefused,
    DuplicateRefused,
    PositionRefused,
    QualityRefused,
    capture_evidence,
)
from handheld.nmea import GnssReader, build_sentence
from handheld.photo import PhotoError, check_quality, hamming, phash, prepare
from handheld.photo_index import DuplicatePhotoError, PhotoIndex
from handheld.position import GnssConfig
from simulator.imagegen import notice_backdrop

CJK = re.compile(r"[\u4e00-\u9fff]")
DAY = 86400.0
T0 = 1_746_518_400.0  # 2025-05-06T08:00:00Z, when the fake receiver reports its fix


def board(seed: int = 1, w: int = 1600, h: int = 1200, title: str = "VILLAGE NOTICE") -> np.ndarray:
    """A notice board in front of a random village background, with text and a poster frame."""
    rng = np.random.default_rng(seed)
    img, (x0, y0, x1, y1) = notice_backdrop(rng, w, h)
    cv2.putText(img, title, (x0 + 30, y0 + 90), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (40, 40, 160), 5, cv2.LINE_AA)
    for i in range(12):
        cv2.putText(
            img,
            f"Line {i} seed {seed} notice",
            (x0 + 40, y0 + 170 + i * 55),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.1,
            (50, 50, 50),
            2,
            cv2.LINE_AA,
        )
    cv2.rectangle(img, (x1 - 260, y1 - 260), (x1 - 40, y1 - 40), (60, 140, 60), 6)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sharp() -> np.ndarray:
    return board(1)


def crop(img: np.ndarray, frac: float) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = int(h * frac), int(w * frac)
    return img[dy : h - dy, dx : w - dx]


def jpeg(img: np.ndarray, q: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return buf.tobytes()


# --------------------------------------------------------------------------- quality gate


def test_sharp_board_passes(sharp: np.ndarray) -> None:
    v = check_quality(sharp)
    assert v["ok"] and v["reasons"] == [] and not v["retake"]
    m = v["metrics"]
    assert m["width"] == 1600 and m["sharpness"] > 500 and m["dark_fraction"] < 0.01


@pytest.mark.parametrize(
    ("degrade", "reason"),
    [
        (lambda im: cv2.GaussianBlur(im, (0, 0), 4), "blurry"),
        (lambda im: cv2.filter2D(im, -1, np.ones((1, 21)) / 21), "motion_blur"),
        (lambda im: cv2.filter2D(im, -1, np.eye(15) / 15), "motion_blur"),
        (lambda im: cv2.convertScaleAbs(im, alpha=0.25, beta=-10), "too_dark"),  # underexposed, mean < 40
        (lambda im: np.clip(im.astype(np.int16) - 150, 0, 255).astype(np.uint8), "too_dark"),  # clipped to 0
        (lambda im: np.where(np.arange(im.shape[1])[None, :, None] < im.shape[1] * 0.4, 0, im), "too_dark"),
        (lambda im: cv2.convertScaleAbs(im, alpha=1.8, beta=60), "too_bright"),
        (lambda im: cv2.resize(im, (640, 480), interpolation=cv2.INTER_AREA), "low_resolution"),
    ],
)
def test_each_gate_reason(sharp: np.ndarray, degrade: object, reason: str) -> None:
    v = check_quality(degrade(sharp))  # type: ignore[operator]
    assert not v["ok"] and reason in v["reasons"], v
    assert v["retake"]
    msg = next(m for m in v["messages"] if m["code"] == reason)
    assert CJK.search(msg["zh"]) and msg["en"] and msg["en"] != reason


def test_all_problems_reported_at_once(sharp: np.ndarray) -> None:
    bad = cv2.resize(cv2.GaussianBlur(cv2.convertScaleAbs(sharp, alpha=0.2), (0, 0), 5), (800, 600))
    assert set(check_quality(bad)["reasons"]) == {"blurry", "too_dark", "low_resolution"}


def test_sharpness_is_resolution_independent(sharp: np.ndarray) -> None:
    big = cv2.resize(sharp, (3200, 2400), interpolation=cv2.INTER_CUBIC)
    a, b = photo.sharpness(sharp), photo.sharpness(big)
    assert abs(a - b) / a < 0.35


@pytest.mark.parametrize("frame", [None, np.zeros((0, 0, 3), np.uint8), np.zeros((0,), np.uint8)])
def test_empty_frame_is_a_verdict_not_a_crash(frame: object) -> None:
    v = check_quality(frame)  # type: ignore[arg-type]
    assert v["reasons"] == ["empty_frame"] and not v["ok"]


def test_gray_and_bgra_frames_accepted(sharp: np.ndarray) -> None:
    assert check_quality(cv2.cvtColor(sharp, cv2.COLOR_BGR2GRAY))["ok"]
    assert check_quality(cv2.cvtColor(sharp, cv2.COLOR_BGR2BGRA))["ok"]


# --------------------------------------------------------------------------- camera, decode, prepare


def _video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def test_capture_from_video_capture(tmp_path: Path, sharp: np.ndarray) -> None:
    src = _video(tmp_path / "cam.avi", [cv2.resize(sharp, (1280, 960))] * 4)
    frame = photo.capture_frame(str(src), warmup=1)
    assert frame.shape == (960, 1280, 3) and check_quality(frame)["ok"]
    cap = cv2.VideoCapture(str(src))
    try:
        photo.capture_frame(cap, warmup=0)
        assert cap.isOpened()  # a capture handed in stays open for the next shot
    finally:
        cap.release()


def test_camera_gone_and_empty_frames(tmp_path: Path, sharp: np.ndarray) -> None:
    with pytest.raises(PhotoError) as ei:
        photo.capture_frame(str(tmp_path / "no-such-camera.avi"))
    assert ei.value.code == "camera_unavailable" and CJK.search(ei.value.zh)
    one = _video(tmp_path / "one.avi", [cv2.resize(sharp, (1280, 960))])
    with pytest.raises(PhotoError) as ei:
        photo.capture_frame(str(one), warmup=3, retries=2)  # the stream dries up
    assert ei.value.code == "empty_frame"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"this is a text file, not a photo\n" * 10, "not_an_image"),
        (bytes(range(256)) * 8, "not_an_image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not_an_image"),  # a JPEG header and nothing else
    ],
)
def test_corrupt_input(data: bytes, code: str) -> None:
    with pytest.raises(PhotoError) as ei:
        photo.decode_image(data)
    assert ei.value.code == code and CJK.search(ei.value.zh) and ei.value.en


def test_prepare_caps_long_side_and_encodes(sharp: np.ndarray) -> None:
    big = cv2.resize(sharp, (4000, 3000))
    data = prepare(big, max_side=1600, quality=80)
    assert data[:3] == b"\xff\xd8\xff"
    out = photo.decode_image(data)
    assert out.shape[:2] == (1200, 1600)
    assert prepare(big, 1600, 80) == data  # deterministic: stable SHA-256
    assert len(prepare(big, 1600, 40)) < len(data)
    small = prepare(cv2.resize(sharp, (800, 600)), max_side=1600)
    assert photo.decode_image(small).shape[:2] == (600, 800)  # never upscaled


# --------------------------------------------------------------------------- hashes


@pytest.mark.slow
def test_phash_near_duplicates_close_unrelated_far(sharp: np.ndarray) -> None:
    h = phash(sharp)
    assert 0 <= h < 2**64
    variants = {
        "reencoded_q40": phash(jpeg(sharp, 40)),
        "resized": phash(cv2.resize(sharp, (800, 600), interpolation=cv2.INTER_AREA)),
        "cropped_3pct": phash(crop(sharp, 0.03)),
        "brightened": phash(cv2.convertScaleAbs(sharp, alpha=1.15, beta=15)),
    }
    for name, v in variants.items():
        assert hamming(h, v) <= 10, name
    for seed in range(2, 7):
        assert hamming(h, phash(board(seed))) > 10


def test_hamming_and_hex() -> None:
    assert hamming(0, 2**64 - 1) == 64
    assert hamming(photo.phash_hex(5), 4) == 1
    assert photo.sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# --------------------------------------------------------------------------- duplicate rule


def _add(idx: PhotoIndex, img: np.ndarray, job: str, site: str, step: str, t: float) -> tuple[str, int]:
    data = prepare(img)
    sha, ph = photo.sha256_hex(data), phash(data)
    assert idx.check(sha, ph, job, site, step, t)["action"] != "refuse"
    idx.add(sha, ph, job, site, step, t)
    return sha, ph


def _check(idx: PhotoIndex, img: np.ndarray, job: str, site: str, step: str, t: float) -> dict:
    data = prepare(img)
    return idx.check(photo.sha256_hex(data), phash(data), job, site, step, t)


def test_rule(sharp: np.ndarray, tmp_path: Path) -> None:
    idx = PhotoIndex(tmp_path / "photos.db")
    sha, ph = _add(idx, sharp, "J1", "S1", "after", T0)
    # exact bytes, anywhere
    d = idx.check(sha, ph, "J9", "S9", "before", T0 + 400 * DAY)
    assert d["action"] == "refuse" and d["code"] == "duplicate_exact"
    # a re-encoded JPEG of the same photo for the same step
    d = _check(idx, photo.decode_image(jpeg(sharp, 60)), "J1", "S1", "after", T0 + 60)
    assert d["code"] == "duplicate_same_step" and d["matches"][0]["distance"] <= 2
    # the same picture claimed as another step of the same visit
    d = _check(idx, photo.decode_image(jpeg(sharp, 60)), "J1", "S1", "poster", T0 + 60)
    assert d["code"] == "duplicate_same_visit"
    # a slightly cropped copy in the same visit: flagged for review, not refused
    d = _check(idx, crop(sharp, 0.03), "J1", "S1", "poster", T0 + 60)
    assert d["action"] == "flag" and d["flags"] == ["similar_same_visit"]
    # same site, another job a few hours later still counts as the same visit
    d = _check(idx, cv2.resize(sharp, (1400, 1050)), "J2", "S1", "before", T0 + 3 * 3600)
    assert d["code"] == "duplicate_same_visit"
    # maintenance months later: the "before" looks like the install "after" - flag only
    d = _check(idx, cv2.convertScaleAbs(sharp, alpha=1.1, beta=10), "J7", "S1", "before", T0 + 120 * DAY)
    assert d["action"] == "flag" and d["flags"] == ["similar_earlier_visit"] and d["code"] is None
    # the same picture claimed for another village
    d = _check(idx, cv2.resize(sharp, (1280, 960)), "J8", "S2", "after", T0 + 2 * DAY)
    assert d["code"] == "reused_other_site"
    d = _check(idx, crop(sharp, 0.03), "J8", "S2", "after", T0 + 2 * DAY)
    assert d["action"] == "flag" and d["flags"] == ["similar_other_site"]
    # an unrelated board
    assert _check(idx, board(5), "J8", "S2", "after", T0 + 2 * DAY)["action"] == "accept"
    for dd in (d,):
        for m in dd["messages"]:
            assert CJK.search(m["zh"]) and m["en"]
    idx.close()
    # durable: a reopened index still knows the photo
    with PhotoIndex(tmp_path / "photos.db") as again:
        assert again.count() == 1 and again.check(sha, ph, "J3", "S3", "x", T0)["code"] == "duplicate_exact"


def test_retract_allows_retake_and_add_is_idempotent(sharp: np.ndarray) -> None:
    idx = PhotoIndex()
    sha, ph = _add(idx, sharp, "J1", "S1", "after", T0)
    assert idx.add(sha, ph, "J1", "S1", "after", T0) == idx.add(sha, ph, "J1", "S1", "after", T0)
    with pytest.raises(DuplicatePhotoError):
        idx.add(sha, ph, "J2", "S1", "after", T0)
    retake = cv2.GaussianBlur(sharp, (0, 0), 0.8)
    assert _check(idx, retake, "J1", "S1", "after", T0 + 30)["code"] == "duplicate_same_step"
    assert idx.retract(sha)
    assert _check(idx, retake, "J1", "S1", "after", T0 + 30)["action"] == "accept"
    # a deleted photo's bytes still cannot be reused for another job
    assert idx.check(sha, ph, "J5", "S5", "after", T0)["code"] == "duplicate_exact"


# --------------------------------------------------------------------------- evidence record


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


def _gnss_ready(lat: float = 27.5, lon: float = 109.9, seconds: int = 7) -> GnssReader:
    """A real reader on loop:// fed 7 s of a good fix (hold timer 5 s)."""
    clock = Clock()
    port = serial.serial_for_url("loop://", timeout=0.05)
    r = GnssReader(port, config=GnssConfig(), clock=clock, wall_clock=lambda: T0)
    for i in range(seconds):
        t = f"0800{i:02d}.00"
        la = f"{int(lat):02d}{(lat % 1) * 60:07.4f}"
        lo = f"{int(lon):03d}{(lon % 1) * 60:07.4f}"
        for body in (
            f"GNGGA,{t},{la},N,{lo},E,1,14,0.7,410.0,M,-20.0,M,,",
            f"GNRMC,{t},A,{la},N,{lo},E,0.0,0.0,060525,,,A",
            f"GNGST,{t},0.9,2.1,1.4,20.0,2.4,1.8,3.5",
        ):
            port.write((build_sentence(body) + "\r\n").encode())
        r.poll()
        clock.t += 1
    return r


def test_capture_evidence_record(tmp_path: Path, sharp: np.ndarray) -> None:
    idx = PhotoIndex(tmp_path / "idx.db")
    gnss = _gnss_ready()
    rec = capture_evidence(
        jpeg(sharp, 95), "J1", "S1", "board_installed", gnss, idx, "HH-0042", T0, store_dir=tmp_path / "ev"
    )
    assert rec["photo"]["sha256"] == photo.sha256_hex(rec["jpeg"])
    assert len(rec["photo"]["phash"]) == 16 and rec["photo"]["source_sha256"] != rec["photo"]["sha256"]
    pos = rec["position"]
    assert pos["lat"] == pytest.approx(27.5) and pos["accuracy_m"] == pytest.approx(3.0)
    assert pos["accuracy_source"] == "gst" and pos["ok"] and pos["gnss_utc"].startswith("2025-05-06T08:00:0")
    assert rec["device"] == "HH-0042" and rec["taken_at"] == T0 and rec["taken_at_iso"].endswith("Z")
    assert rec["quality"]["sharpness"] > 100 and rec["flags"] == []
    meta = {k: v for k, v in rec.items() if k != "jpeg"}
    json.dumps(meta)
    stored = json.loads((tmp_path / "ev" / f"{rec['photo']['sha256']}.json").read_text())
    assert stored["record_id"] == rec["record_id"]
    assert (tmp_path / "ev" / f"{rec['photo']['sha256']}.jpg").read_bytes() == rec["jpeg"]
    assert idx.count() == 1


def test_refusals_are_typed_bilingual_and_lose_nothing(tmp_path: Path, sharp: np.ndarray) -> None:
    idx = PhotoIndex(tmp_path / "idx.db")
    gnss = _gnss_ready()
    first = capture_evidence(sharp, "J1", "S1", "board_installed", gnss, idx, "HH-1", T0)
    bad_file = tmp_path / "photo.jpg"
    bad_file.write_bytes(b"\xff\xd8\xff\xe0 truncated upload")
    cases = [
        (bad_file, BadInputRefused, "not_an_image"),
        (b"", BadInputRefused, "empty_file"),
        (np.zeros((0, 0, 3), np.uint8), BadInputRefused, "empty_frame"),
        (cv2.GaussianBlur(board(3), (0, 0), 5), QualityRefused, "photo_quality"),
        (first["jpeg"], DuplicateRefused, "duplicate_exact"),
        (jpeg(sharp, 50), DuplicateRefused, "duplicate_same_step"),
    ]
    for data, kind, code in cases:
        with pytest.raises(kind) as ei:
            capture_evidence(data, "J1", "S1", "board_installed", gnss, idx, "HH-1", T0 + 10)
        err = ei.value
        assert err.code == code and CJK.search(err.zh) and err.en and err.retake
        assert json.dumps(err.as_dict(), ensure_ascii=False)
    with pytest.raises(QualityRefused) as ei:
        capture_evidence(cv2.GaussianBlur(board(3), (0, 0), 5), "J1", "S1", "poster", gnss, idx, "HH-1", T0)
    assert ei.value.reasons == ["blurry"] and "模糊" in ei.value.zh and "blurry" in ei.value.en
    assert idx.count() == 1 and idx.photos()[0]["sha256"] == first["photo"]["sha256"]


def test_position_gate(sharp: np.ndarray) -> None:
    idx = PhotoIndex()
    young = _gnss_ready(seconds=2)  # accuracy fine but not held for 5 s yet
    with pytest.raises(PositionRefused) as ei:
        capture_evidence(sharp, "J1", "S1", "after", young, idx, "HH-1", T0)
    assert ei.value.reasons == ["accuracy_not_held"] and not ei.value.retake and CJK.search(ei.value.zh)
    with pytest.raises(PositionRefused) as ei:
        capture_evidence(sharp, "J1", "S1", "after", None, idx, "HH-1", T0)
    assert ei.value.reasons == ["no_receiver"]
    # supervisor-approved fallback: accepted, position flagged
    rec = capture_evidence(sharp, "J1", "S1", "after", young, idx, "HH-1", T0, require_position=False)
    assert rec["flags"] == ["position_unverified"] and rec["position"]["flags"] == ["accuracy_not_held"]
    assert idx.count() == 1


def test_install_then_maintenance_months_later(sharp: np.ndarray) -> None:
    """The maintenance "before" resembles the install "after" - linked, not refused.
    Within the maintenance visit, the "after" must not be a copy of its "before"."""
    idx = PhotoIndex()
    gnss = _gnss_ready()
    capture_evidence(sharp, "INST-1", "S1", "after", gnss, idx, "HH-1", T0)
    later = T0 + 150 * DAY
    before = cv2.convertScaleAbs(crop(sharp, 0.02), alpha=0.95, beta=5)
    rec = capture_evidence(before, "MAINT-7", "S1", "before", gnss, idx, "HH-2", later)
    assert rec["flags"] == ["similar_earlier_visit"]
    assert rec["duplicate"]["matches"][0]["job"] == "INST-1"
    assert evidence.describe("similar_earlier_visit")["zh"]
    with pytest.raises(DuplicateRefused) as ei:
        capture_evidence(jpeg(before, 70), "MAINT-7", "S1", "after", gnss, idx, "HH-2", later + 600)
    assert ei.value.code == "duplicate_same_visit"
    after = board(11, title="NEW POSTER 2025")
    assert capture_evidence(after, "MAINT-7", "S1", "after", gnss, idx, "HH-2", later + 900)["flags"] == []
