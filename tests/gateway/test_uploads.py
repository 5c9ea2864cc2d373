"""Photo uploads: handheld -> gateway (HTTP, chunked, resumable, deduplicated
by content hash) -> central side at low priority.

Everything is real: the gateway's own web server (``gateway/web.py``) on a
loopback port, a Mosquitto password file and ACL written by
``gateway/broker.py`` (hashed by ``mosquitto_passwd``), SQLite files, a
JPEG made by OpenCV, an uploader process killed with SIGKILL mid-file, and
the uplink double (simulator/uplink_double.py) over verified TLS.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from common.ports import free_port
from gateway import metrics as M
from gateway.broker import Account, write_config
from gateway.http.auth import Credentials, verify_mosquitto_hash
from gateway.http.server import WebService, start_web
from gateway.http.uploads import parse_ranges, ranges
from gateway.store.events import EventStore, StoredEvent
from gateway.store.photos import photo_path
from gateway.uplink.photo_sync import PhotoSync, uploads_url
from handheld.uploader import PhotoQueue, Uploader
from simulator.central import Certs
from simulator.uplink_double import UplinkDouble, UplinkDoubleHttps
from tests.uplink_rig import FAST, Log

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 16 * 1024
PW = {"gw-o1": "gw-secret", "hh01": "hh01-pw", "hh02": "hh02-pw", "lk01": "lk01-pw"}


def jpeg(seed: int = 1, w: int = 480, h: int = 360) -> bytes:
    """A real JPEG of a few hundred KB (noise does not compress)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.rectangle(img, (40, 40), (w - 40, h - 40), (0, 0, 255), 8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return M.REGISTRY.get_sample_value(name, labels or {}) or 0.0


class Gateway:
    """The gateway's web server (page + uploads), restartable on one port."""

    def __init__(self, root: Path, passwd: Path | None) -> None:
        self.db = root / "gw" / "gateway.db"
        EventStore(self.db).close()  # as the gateway's ingest would at start: migrated
        self.port = free_port()
        self.passwd = passwd
        self.stop_event = threading.Event()
        self.svc: WebService | None = None
        self.services: list[WebService] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        self.stop_event = threading.Event()
        web: dict[str, Any] = {"host": "127.0.0.1", "port": self.port}
        if self.passwd is not None:
            web["passwd_file"] = str(self.passwd)
        self.svc = start_web(self.db, web, self.stop_event)
        self.services.append(self.svc)
        return self

    def stop(self) -> None:
        if self.svc is not None:
            self.stop_event.set()
            self.svc.join(10)
            self.svc = None

    @property
    def puts(self) -> dict[str, int]:
        """PUTs that arrived whole, per photo, over every run of this gateway."""
        out: dict[str, int] = {}
        for s in self.services:
            for k, v in s.uploads.puts.items():
                out[k] = out.get(k, 0) + v
        return out

    def request(self, method: str, path: str, body: bytes | None = None, user: str | None = "hh01",
                password: str | None = None, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        import base64

        h = dict(headers or {})
        if user is not None:
            pw = PW[user] if password is None else password
            h["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def row(self, sha: str) -> dict[str, Any] | None:
        s = EventStore(self.db)
        try:
            r = s.db.execute("SELECT device, size, chunks, received, completed_at, synced_at FROM uploads "
                             "WHERE sha256=?", (sha,)).fetchone()
            n = s.db.execute("SELECT count(*) FROM uploads").fetchone()[0]
        finally:
            s.close()
        if r is None:
            return None
        return dict(zip(("device", "size", "chunks", "received", "completed_at", "synced_at"), r,
                        strict=True)) | {"rows": n}


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    accounts = [Account("gw-o1", PW["gw-o1"], "o1", "gateway"), Account("hh01", PW["hh01"], "o1", "handheld"),
                Account("hh02", PW["hh02"], "o1", "handheld"), Account("lk01", PW["lk01"], "o1", "locker")]
    conf = write_config(tmp_path / "broker", free_port(), accounts)
    return conf.parent / "passwd"


@pytest.fixture
def gw(tmp_path: Path, passwd: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path, passwd).start()
    try:
        yield g
    finally:
        g.stop()


def uploader(gw: Gateway, q: PhotoQueue, user: str = "hh01", **kw: Any) -> Uploader:
    """The handheld's uploader for the rig's gateway. Its request timeout is
    generous: a test here asserts an upload finished in one pass, and on a
    loaded box (six test workers on two cores) a request took over 3 s."""
    return Uploader(q, gw.url, user, PW[user], chunk_size=CHUNK, timeout_s=15, **kw)


# ------------------------------------------------------------------ units

def test_mosquitto_hashes_and_acl_kinds(passwd: Path) -> None:
    line = dict(x.split(":", 1) for x in passwd.read_text().split())
    assert line["hh01"].startswith("$7$")
    assert verify_mosquitto_hash(line["hh01"], PW["hh01"])
    assert not verify_mosquitto_hash(line["hh01"], PW["hh02"])
    assert not verify_mosquitto_hash("$7$x$y$z", "p") and not verify_mosquitto_hash("plain", "plain")
    creds = Credentials(passwd)
    assert creds.check("hh01", PW["hh01"]).kind == "handheld"  # type: ignore[union-attr]
    assert creds.check("lk01", PW["lk01"]).kind == "locker"  # type: ignore[union-attr]
    assert creds.check("gw-o1", PW["gw-o1"]).kind == "gateway"  # type: ignore[union-attr]
    assert creds.check("hh01", "wrong") is None and creds.check("nobody", "x") is None
    assert creds.check("hh01", PW["hh01"]) is not None  # cached path agrees
    assert creds.check("hh01", "wrong") is None
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and parse_ranges("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    assert uploads_url("https://c.example:8443/v1/batches") == "https://c.example:8443/v1/uploads"
    assert uploads_url("https://c.example/") == "https://c.example/v1/uploads"


# ------------------------------------------------------------ end to end

def test_upload_in_chunks_and_duplicates_stored_once(tmp_path: Path, gw: Gateway) -> None:
    photo = jpeg(1)
    sha = hashlib.sha256(photo).hexdigest()
    q1 = PhotoQueue(tmp_path / "hh01" / "queue.db")
    assert q1.add(photo, {"board": "b-17"}) == sha
    assert q1.add(photo, {"board": "b-17"}) == sha  # same bytes twice: queued once
    assert len(q1.pending()) == 1
    chunks = -(-len(photo) // CHUNK)
    assert chunks >= 10
    res = uploader(gw, q1).run_once()
    assert res.error is None and res.done == [sha] and res.sent_chunks == chunks and res.pending == 0
    stored = photo_path(gw.db, sha)
    assert stored.read_bytes() == photo
    assert not (gw.db.parent / "uploads" / sha).exists()  # chunk files gone once assembled
    row = gw.row(sha)
    assert row and row["completed_at"] and row["received"] == chunks and row["device"] == "hh01"
    st = q1.status()[0]
    assert st["done"] and st["confirmed"] == chunks and st["error"] is None
    assert gw.puts[sha] == chunks

    # The same bytes from another handheld: one POST, no chunk, stored once.
    dedup0 = sample("postedge_photos_total", {"outcome": "deduplicated"})
    q2 = PhotoQueue(tmp_path / "hh02" / "queue.db")
    q2.add(photo, {"board": "b-17", "by": "hh02"})
    res2 = uploader(gw, q2, "hh02").run_once()
    assert res2.done == [sha] and res2.sent_chunks == 0
    assert gw.puts[sha] == chunks
    assert gw.row(sha)["rows"] == 1  # type: ignore[index]
    assert sorted(p.name for p in stored.parent.iterdir()) == [f"{sha}.jpg"]
    assert sample("postedge_photos_total", {"outcome": "deduplicated"}) == dedup0 + 1

    # HEAD/GET tell the state.
    code, h, _ = gw.request("HEAD", f"/v1/uploads/{sha}")
    assert code == 200 and h["x-upload-complete"] == "true" and h["x-upload-confirmed"] == f"0-{chunks - 1}"
    code, _, body = gw.request("GET", f"/v1/uploads/{sha}")
    assert code == 200 and json.loads(body)["complete"] is True
    # The status page still works on the same port.
    code, _, body = gw.request("GET", "/api/status", user=None)
    assert code == 200 and "backlog" in json.loads(body)


def test_uploader_killed_mid_file_resumes_with_only_missing_chunks(tmp_path: Path, gw: Gateway) -> None:
    photo = jpeg(2)
    sha = hashlib.sha256(photo).hexdigest()
    chunks = -(-len(photo) // CHUNK)
    src = tmp_path / "evidence.jpg"
    src.write_bytes(photo)
    qdb = tmp_path / "hh01" / "queue.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "handheld.uploader", "--db", str(qdb), "--url", gw.url, "--user", "hh01",
         "--password", PW["hh01"], "--add", str(src), "--chunk-size", str(CHUNK), "--chunk-delay", "0.05"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["evt"] == "chunk":
                seen += 1
                if seen == 5:
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    code, h, _ = gw.request("HEAD", f"/v1/uploads/{sha}")
    confirmed = parse_ranges(h["x-upload-confirmed"])
    assert code == 200 and h["x-upload-complete"] == "false"
    assert 5 <= len(confirmed) < chunks
    puts_before = gw.puts[sha]

    q = PhotoQueue(qdb)  # the same queue the killed process used
    assert [p["sha256"] for p in q.pending()] == [sha]
    res = uploader(gw, q).run_once()
    assert res.done == [sha]
    assert res.sent_chunks == chunks - len(confirmed)
    assert gw.puts[sha] - puts_before == chunks - len(confirmed)  # counted at the gateway
    assert photo_path(gw.db, sha).read_bytes() == photo


def test_gateway_gone_and_restarted_mid_upload(tmp_path: Path, gw: Gateway) -> None:
    photo = jpeg(3)
    sha = hashlib.sha256(photo).hexdigest()
    chunks = -(-len(photo) // CHUNK)
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {})
    n = {"chunks": 0}

    def kill_gateway_after_4(_sha: str, _idx: int) -> None:
        n["chunks"] += 1
        if n["chunks"] == 4:
            gw.stop()

    res = uploader(gw, q, on_chunk=kill_gateway_after_4).run_once()
    assert res.done == [] and res.sent_chunks == 4 and res.pending == 1
    assert res.error is not None and res.error["code"] == "gateway_unreachable"
    assert "网关暂时无法连接" in res.error["zh"] and "Gateway unreachable" in res.error["en"]
    st = q.status()[0]
    assert not st["done"] and st["confirmed"] == 4 and st["chunks"] == chunks
    assert st["error"]["code"] == "gateway_unreachable" and "照片已保存" in st["error"]["zh"]
    assert (q.dir / f"{sha}.jpg").read_bytes() == photo  # nothing in the queue lost

    # Still down: another pass changes nothing and says the same.
    res = uploader(gw, q).run_once()
    assert res.error and res.error["code"] == "gateway_unreachable" and res.pending == 1

    gw.start()  # a new gateway process would find the same database and chunk files
    res = uploader(gw, q).run_once()
    assert res.done == [sha] and res.sent_chunks == chunks - 4
    assert gw.puts[sha] == chunks  # every chunk crossed the wire exactly once
    assert photo_path(gw.db, sha).read_bytes() == photo
    assert q.status()[0]["done"] and not (q.dir / f"{sha}.jpg").exists()


def test_bad_input_is_refused_counted_and_loses_nothing(tmp_path: Path, gw: Gateway) -> None:
    photo = jpeg(4)
    sha = hashlib.sha256(photo).hexdigest()
    begin = json.dumps({"sha256": sha, "size": len(photo), "chunk_size": CHUNK, "meta": {}}).encode()

    assert gw.request("POST", "/v1/uploads", begin, user=None)[0] == 401
    code, h, body = gw.request("POST", "/v1/uploads", begin, password="wrong")
    assert code == 401 and "basic" in h["www-authenticate"].lower()
    assert json.loads(body)["message"]["en"] == "Wrong username or password"
    code, _, body = gw.request("POST", "/v1/uploads", begin, user="lk01")
    assert code == 403 and json.loads(body)["error"] == "forbidden"
    assert gw.request("POST", "/v1/uploads", b"{not json")[0] == 400
    big = json.dumps({"sha256": sha, "size": 64 * 1024 * 1024, "chunk_size": CHUNK}).encode()
    assert gw.request("POST", "/v1/uploads", big)[0] == 413
    assert gw.request("POST", "/v1/uploads", json.dumps({"sha256": "ab", "size": 1, "chunk_size": CHUNK})
                      .encode())[0] == 400

    code, _, body = gw.request("POST", "/v1/uploads", begin)
    assert code == 201 and json.loads(body)["confirmed"] == []
    assert gw.request("POST", "/v1/uploads", begin)[0] == 200  # idempotent

    c0 = photo[:CHUNK]
    bad0 = sample("postedge_upload_rejected_total", {"reason": "chunk_hash"})
    code, _, body = gw.request("PUT", f"/v1/uploads/{sha}/0", c0, headers={"X-Chunk-Sha256": "0" * 64})
    assert code == 400 and json.loads(body)["error"] == "chunk_hash"
    assert sample("postedge_upload_rejected_total", {"reason": "chunk_hash"}) == bad0 + 1
    short = c0[:-1]
    code, _, _ = gw.request("PUT", f"/v1/uploads/{sha}/0", short,
                            headers={"X-Chunk-Sha256": hashlib.sha256(short).hexdigest()})
    assert code == 400
    assert gw.request("PUT", f"/v1/uploads/{sha}/999", c0,
                      headers={"X-Chunk-Sha256": hashlib.sha256(c0).hexdigest()})[0] == 400
    assert gw.request("PUT", f"/v1/uploads/{'e' * 64}/0", c0,
                      headers={"X-Chunk-Sha256": hashlib.sha256(c0).hexdigest()})[0] == 404
    code, _, _ = gw.request("PUT", f"/v1/uploads/{sha}/0", c0,
                            headers={"X-Chunk-Sha256": hashlib.sha256(c0).hexdigest()})
    assert code == 204
    assert gw.row(sha)["received"] == 1  # type: ignore[index]

    # A photo whose bytes do not hash to the announced sha256: every chunk
    # checks out, the whole file does not -> 409, chunks discarded.
    other = bytearray(photo)
    other[len(other) // 2] ^= 0xFF
    wrong = bytes(other)
    fake = hashlib.sha256(b"something else").hexdigest()
    doc = json.dumps({"sha256": fake, "size": len(wrong), "chunk_size": CHUNK}).encode()
    assert gw.request("POST", "/v1/uploads", doc)[0] == 201
    n = -(-len(wrong) // CHUNK)
    for i in range(n):
        part = wrong[i * CHUNK:(i + 1) * CHUNK]
        code, _, body = gw.request("PUT", f"/v1/uploads/{fake}/{i}", part,
                                   headers={"X-Chunk-Sha256": hashlib.sha256(part).hexdigest()})
        assert code == (409 if i == n - 1 else 204), (i, code, body)
    assert json.loads(body)["error"] == "file_hash"
    assert gw.row(fake)["received"] == 0 and not photo_path(gw.db, fake).exists()  # type: ignore[index]
    assert not (gw.db.parent / "uploads" / fake).exists()

    # Not a JPEG.
    junk = b"GIF89a" + bytes(5000)
    jsha = hashlib.sha256(junk).hexdigest()
    gw.request("POST", "/v1/uploads", json.dumps({"sha256": jsha, "size": len(junk), "chunk_size": CHUNK})
               .encode())
    assert gw.request("PUT", f"/v1/uploads/{jsha}/0", junk,
                      headers={"X-Chunk-Sha256": hashlib.sha256(junk).hexdigest()})[0] == 415

    # After all that, the real upload of the first photo finishes: chunk 0
    # is not sent again, nothing was lost.
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {})
    res = uploader(gw, q).run_once()
    assert res.done == [sha] and res.sent_chunks == -(-len(photo) // CHUNK) - 1
    assert photo_path(gw.db, sha).read_bytes() == photo
    # The page and its JSON are unaffected.
    assert gw.request("GET", "/healthz", user=None)[0] == 200


def test_login_refused_keeps_the_queue_and_says_why(tmp_path: Path, gw: Gateway) -> None:
    q = PhotoQueue(tmp_path / "lk" / "queue.db")
    sha = q.add(jpeg(5), {})
    res = Uploader(q, gw.url, "hh01", "not-the-password", chunk_size=CHUNK).run_once()
    assert res.error and res.error["code"] == "unauthorized" and "密码" in res.error["zh"]
    res = Uploader(q, gw.url, "lk01", PW["lk01"], chunk_size=CHUNK).run_once()
    assert res.error and res.error["code"] == "forbidden" and res.pending == 1
    assert q.pending()[0]["sha256"] == sha and (q.dir / f"{sha}.jpg").exists()


def test_uploads_without_passwd_file_answer_503(tmp_path: Path) -> None:
    g = Gateway(tmp_path, None).start()
    try:
        code, _, body = g.request("POST", "/v1/uploads", b"{}")
        assert code == 503 and "passwd_file" in json.loads(body)["message"]["en"]
        assert g.request("GET", "/api/status", user=None)[0] == 200
    finally:
        g.stop()


def test_gateway_down_from_the_start(tmp_path: Path) -> None:
    q = PhotoQueue(tmp_path / "queue.db")
    sha = q.add(jpeg(6), {"board": "b-1"})
    res = Uploader(q, f"http://127.0.0.1:{free_port()}", "hh01", "x", timeout_s=1).run_once()
    assert res.error and res.error["code"] == "gateway_unreachable"
    assert res.error["zh"] == "网关暂时无法连接，照片已保存，稍后自动重传"
    assert [p["sha256"] for p in q.pending()] == [sha] and (q.dir / f"{sha}.jpg").exists()


# ---------------------------------------------------------------- upstream

def _events(n: int) -> list[StoredEvent]:
    return [StoredEvent(f"lk01-0badc0de-{i}", "o1", "locker", "lk01", "0badc0de", i, "custody",
                        "locker.deposit", int(time.time()), b'{"body":{}}') for i in range(1, n + 1)]


def test_photos_go_upstream_only_after_the_event_backlog(tmp_path: Path, gw: Gateway, certs: Certs) -> None:
    photo = jpeg(7)
    sha = hashlib.sha256(photo).hexdigest()
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {"board": "b-9"})
    assert uploader(gw, q).run_once().done == [sha]
    store = EventStore(gw.db)
    store.commit_events(_events(5))
    central = UplinkDouble()
    https = UplinkDoubleHttps(central, certs.server_cert, certs.server_key, auth=("gw-o1", "up")).up()
    log = Log()
    stop = threading.Event()
    up = {"url": https.url, "ca_file": str(certs.ca), "username": "gw-o1", "password": "up", **FAST}
    ps = PhotoSync(gw.db, "o1", up, stop, log=log, poll_s=0.05, chunk_size=CHUNK)
    ps.start()
    try:
        log.wait("photo_sync_waiting", 5)
        time.sleep(0.5)
        assert central.photos == {} and central.photo_begins[sha] == 0  # events first
        assert gw.row(sha)["synced_at"] is None  # type: ignore[index]
        store.mark_synced([e.id for e in _events(5)])  # the syncer drained the backlog
        assert central.wait_for(lambda c: sha in c.photos, 10)
        log.wait("photo_synced", 5)
    finally:
        stop.set()
        ps.join(10)
        https.down()
    assert central.photos[sha] == photo
    assert central.photo_puts[sha] == -(-len(photo) // CHUNK)
    assert central.photo_claims[sha][0]["outlet"] == "o1"
    assert central.photo_claims[sha][0]["meta"]["meta"] == {"board": "b-9"}
    assert gw.row(sha)["synced_at"] is not None  # type: ignore[index]
    assert not photo_path(gw.db, sha).exists()  # the platform has it: the gateway's copy is gone
    store.close()


def test_photo_sync_pauses_for_events_and_resumes_upstream(tmp_path: Path, gw: Gateway, certs: Certs) -> None:
    """An event arriving mid-photo pauses it within a chunk; the resumed
    photo sends only what the central side lacks; a second outlet's copy of
    the same photo costs the central side no chunk."""
    photo = jpeg(8)
    sha = hashlib.sha256(photo).hexdigest()
    chunks = -(-len(photo) // CHUNK)
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {})
    assert uploader(gw, q).run_once().done == [sha]
    store = EventStore(gw.db)
    central = UplinkDouble()
    https = UplinkDoubleHttps(central, certs.server_cert, certs.server_key).up()
    log = Log()
    stop = threading.Event()
    up = {"url": https.url, "ca_file": str(certs.ca), **FAST}
    orig = central.photo_chunk
    events = _events(1)

    def chunk_then_event(sha_: str, idx: int, body: bytes, h: str) -> tuple[int, bool]:
        out = orig(sha_, idx, body, h)
        if idx == 2:
            store.commit_events(events)  # a custody event arrives while chunk 2 is on the wire
        return out

    central.photo_chunk = chunk_then_event  # type: ignore[method-assign]
    ps = PhotoSync(gw.db, "o1", up, stop, log=log, poll_s=0.05, chunk_size=CHUNK)
    ps.start()
    try:
        log.wait("photo_sync_paused", 10)
        time.sleep(0.3)
        assert sha not in central.photos and central.photo_puts[sha] == 3
        store.mark_synced([e.id for e in events])
        assert central.wait_for(lambda c: sha in c.photos, 10)
        log.wait("photo_synced", 5)
    finally:
        stop.set()
        ps.join(10)
    assert central.photo_puts[sha] == chunks and central.photos[sha] == photo

    # The same photo from a second outlet's gateway: deduplicated upstream.
    g2 = Gateway(tmp_path / "o2", None)
    s2 = EventStore(g2.db)
    s2.db.execute("INSERT INTO uploads(sha256,device,size,chunk_size,chunks,received,created,completed_at,"
                  "meta) VALUES (?,?,?,?,?,?,?,?,?)",
                  (sha, "hh09", len(photo), CHUNK, chunks, chunks, time.time(), time.time(), "{}"))
    photo_path(g2.db, sha).parent.mkdir(parents=True)
    photo_path(g2.db, sha).write_bytes(photo)
    stop2 = threading.Event()
    log2 = Log()
    ps2 = PhotoSync(g2.db, "o2", up, stop2, log=log2, poll_s=0.05, chunk_size=CHUNK)
    ps2.start()
    try:
        log2.wait("photo_synced", 10)
    finally:
        stop2.set()
        ps2.join(10)
        https.down()
    assert central.photo_puts[sha] == chunks  # no chunk sent again
    assert [c["outlet"] for c in central.photo_claims[sha]][-1] == "o2"
    assert log2.of("photo_synced")[0]["chunks_sent"] == 0
    s2.close()
    store.close()


def test_mqtt_uplink_skips_photos_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    EventStore(db).close()
    log = Log()
    ps = PhotoSync(db, "o1", {"url": "mqtts://127.0.0.1:8883"}, threading.Event(), log=log)
    ps.start()
    ps.join(5)
    assert not ps.is_alive() and "MQTT" in log.of("photo_sync_skipped")[0]["reason"]


def test_web_config_passwd_file(tmp_path: Path) -> None:
    from gateway.config import ConfigError, GatewayConfig

    cfg = GatewayConfig.from_dict({"outlet": "o1", "db": "gw.db", "web": {"passwd_file": "mosquitto/passwd"}},
                                  base=tmp_path)
    assert cfg.web is not None and cfg.web.passwd_file == str(tmp_path / "mosquitto" / "passwd")
    with pytest.raises(ConfigError, match="web.passwd_file"):
        GatewayConfig.from_dict({"outlet": "o1", "db": "gw.db", "web": {"passwd_file": 3}})
    assert os.path.basename(cfg.web.passwd_file) == "passwd"


def test_lost_chunk_file_is_asked_for_again(tmp_path: Path, gw: Gateway) -> None:
    """A confirmed chunk whose file vanished (disk trouble) is un-confirmed
    at assembly and sent again; the photo still arrives intact."""
    photo = jpeg(9)
    sha = hashlib.sha256(photo).hexdigest()
    chunks = -(-len(photo) // CHUNK)
    q = PhotoQueue(tmp_path / "hh01" / "queue.db")
    q.add(photo, {})

    def lose_chunk_1(_sha: str, idx: int) -> None:
        if idx == 3:
            (gw.db.parent / "uploads" / sha / "1").unlink()

    res = uploader(gw, q, on_chunk=lose_chunk_1).run_once()
    assert res.done == [sha] and res.sent_chunks == chunks + 1
    assert photo_path(gw.db, sha).read_bytes() == photo
