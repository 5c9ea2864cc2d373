"""The clerk console (gateway/http/clerk.py) over the real gateway web server
and a real SQLite store: logins, sessions, CSRF, throttling, roles, alarms,
parcel search, compartment requests to the platform, the scan feed and the
handover summary; and what an attacker on the outlet LAN tries.

The browser half (Chromium, zh and en, 390x844) is test_clerk_browser.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import session as S
from gateway.notify.state import ensure_schema
from gateway.store import clerks
from gateway.store.events import EventStore
from tests.gateway.clerk_rig import PARCEL, PASSWORDS, XSS, Rig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


# ------------------------------------------------------------------ accounts

def test_password_hash_is_scrypt_salted_and_checks(tmp_path: Path) -> None:
    h1, h2 = S.hash_password("correct horse"), S.hash_password("correct horse")
    assert h1.startswith("scrypt$15$8$1$") and h1 != h2  # salted
    assert "correct horse" not in h1
    assert S.verify_password("correct horse", h1)
    assert not S.verify_password("correct horsf", h1)
    assert not S.verify_password("x" * 10_000, h1)  # over-long: refused before the KDF
    assert not S.verify_password("anything", None)
    assert not S.verify_password("anything", "garbage")
    with pytest.raises(S.BadCredential):
        S.hash_password("short")
    cheap = S.hash_password("correct horse", log_n=10)  # each hash is checked at its own cost
    assert cheap.startswith("scrypt$10$") and S.verify_password("correct horse", cheap)
    assert not S.verify_password("correct horsf", cheap)
    for bad in (9, 21):
        with pytest.raises(ValueError):
            S.hash_password("correct horse", log_n=bad)


@pytest.mark.slow
def test_cli_adds_a_clerk_with_the_password_from_stdin(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('outlet = "o1"\ndb = "gateway.db"\n\n[broker]\nhost = "127.0.0.1"\nport = 1883\n'
                   'username = "gw-o1"\npassword = "x"\n', encoding="utf-8")
    env = {"PYTHONPATH": str(ROOT), "POSTEDGE_LANG": "en", "PATH": "/usr/bin:/bin"}

    def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postedge.cli", "gateway", "clerk", *args,
                               "--config", str(cfg)], input=stdin, capture_output=True, text=True,
                              env=env, timeout=60)

    r = run("add", "anna", "--role", "supervisor", stdin="a-long-secret-1\n")
    assert r.returncode == 0, r.stderr
    assert "anna" in r.stdout and "a-long-secret-1" not in r.stdout + r.stderr
    r = run("add", "bo", stdin="short\n")
    assert r.returncode == 2 and "password" in r.stderr
    r = run("add", "bad name!", stdin="a-long-secret-2\n")
    assert r.returncode == 2
    store = EventStore(tmp_path / "gateway.db")
    try:
        rows = clerks.clerks(store.db)
        pw = clerks.clerk(store.db, "anna")
        events = store.db.execute("SELECT device, payload FROM events "
                                  "WHERE type='gateway.clerk_added'").fetchall()
        raw = b"".join(bytes(p) for _, p in events) + (tmp_path / "gateway.db").read_bytes()
    finally:
        store.close()
    assert rows == [{"name": "anna", "role": "supervisor", "disabled": False}]
    assert pw is not None and S.verify_password("a-long-secret-1", pw["pw"])
    assert [d for d, _ in events] == ["gw-o1-admin"]
    assert json.loads(events[0][1])["body"] == {"name": "anna", "role": "supervisor", "new": True}
    assert b"a-long-secret-1" not in raw
    r = run("list", stdin="")
    assert "anna" in r.stdout and "supervisor" in r.stdout
    assert run("disable", "anna", stdin="").returncode == 0
    assert run("disable", "nobody", stdin="").returncode == 1
    assert "(disabled)" in run("list", stdin="").stdout
    store = EventStore(tmp_path / "gateway.db")
    try:
        gone = store.db.execute("SELECT payload FROM events WHERE type='gateway.clerk_disabled'").fetchall()
    finally:
        store.close()
    assert [json.loads(p)["body"]["found"] for (p,) in gone] == [True, False]


def test_a_disabled_clerk_is_logged_out_at_once_and_cannot_log_in(rig: Rig) -> None:
    c = rig.client()
    assert c.login("bo") == 303 and c.get("/clerk")[0] == 200
    store = rig.store()
    try:
        with store.tx():
            assert clerks.disable(store.db, "bo")
    finally:
        store.close()
    assert c.get("/clerk")[0] == 303
    assert c.login("bo") == 401


# ------------------------------------------------------------------ sessions

def test_login_cookie_is_httponly_strict_and_logout_ends_the_session(rig: Rig) -> None:
    c = rig.client()
    code, hdrs, _ = c.get("/clerk")
    assert code == 303 and hdrs["location"].startswith("/clerk/login")
    assert c.login("anna") == 303
    cookie = c.last_set_cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/clerk" in cookie
    token = c.cookies["pe_clerk"]
    assert len(token) >= 43
    code, hdrs, html = c.get("/clerk?lang=en")
    assert code == 200 and "anna" in html
    assert "form-action 'self'" in hdrs["content-security-policy"]
    store = rig.store()
    try:
        stored = [r[0] for r in store.db.execute("SELECT token_hash FROM clerk_sessions")]
    finally:
        store.close()
    assert token not in stored and S.token_hash(token) in stored  # only the hash at rest
    assert [e["body"]["name"] for e in rig.own_events("gateway.clerk_login")] == ["anna"]
    assert c.post("/clerk/logout", {"csrf": c.csrf()})[0] == 303
    assert "pe_clerk" not in c.cookies
    c.cookies["pe_clerk"] = token  # the old cookie, replayed
    assert c.get("/clerk")[0] == 303
    assert len(rig.own_events("gateway.clerk_logout")) == 1


def test_session_fixation_a_planted_token_is_never_promoted(rig: Rig) -> None:
    victim = rig.client()
    planted = "attacker-chosen-token-value-0123456789abcdefgh"
    victim.cookies["pe_clerk"] = planted
    assert victim.login("anna") == 303
    assert victim.cookies["pe_clerk"] != planted
    attacker = rig.client()
    attacker.cookies["pe_clerk"] = planted
    assert attacker.get("/clerk")[0] == 303
    # Nor does an attacker's own valid session survive being planted on a victim who logs in.
    attacker = rig.client()
    assert attacker.login("bo") == 303
    own = attacker.cookies["pe_clerk"]
    victim = rig.client()
    victim.cookies["pe_clerk"] = own
    assert victim.login("anna") == 303
    assert attacker.get("/clerk")[0] == 303  # the planted session was ended at the victim's login


def test_expired_and_idle_sessions_are_refused(rig: Rig) -> None:
    c = rig.client()
    assert c.login("anna") == 303
    th = S.token_hash(c.cookies["pe_clerk"])
    store = rig.store()
    try:
        store.db.execute("UPDATE clerk_sessions SET expires=? WHERE token_hash=?", (time.time() - 1, th))
    finally:
        store.close()
    assert c.get("/clerk")[0] == 303
    code, _, html = c.post("/clerk/alarm", {"csrf": "x", "alarm": rig.alarm_ordinary, "action": "acknowledge",
                                             "lang": "en"})
    assert code == 401 and "log in" in html.lower()
    c2 = rig.client()
    assert c2.login("anna") == 303
    th2 = S.token_hash(c2.cookies["pe_clerk"])
    store = rig.store()
    try:
        store.db.execute("UPDATE clerk_sessions SET last_seen=? WHERE token_hash=?",
                         (time.time() - S.SESSION_IDLE_S - 5, th2))
        left = store.db.execute("SELECT count(*) FROM clerk_sessions WHERE token_hash=?",
                                (th2,)).fetchone()[0]
    finally:
        store.close()
    assert left == 1
    assert c2.get("/clerk")[0] == 303


# ------------------------------------------------------------------ CSRF and origin

def test_csrf_missing_or_wrong_is_refused_and_changes_nothing(rig: Rig) -> None:
    c = rig.client()
    assert c.login("anna") == 303
    good = c.csrf()
    for form in ({}, {"csrf": ""}, {"csrf": "wrong"}, {"csrf": good[:-1]}):
        code, _, _ = c.post("/clerk/alarm", {**form, "alarm": rig.alarm_ordinary, "action": "acknowledge",
                                              "note": "x"})
        assert code == 403
    other = rig.client()
    assert other.login("bo") == 303
    code, _, _ = c.post("/clerk/alarm", {"csrf": other.csrf(), "alarm": rig.alarm_ordinary,
                                         "action": "acknowledge"})
    assert code == 403  # another session's token
    code, _, _ = c.post("/clerk/logout", {"csrf": "wrong"})
    assert code == 403 and c.get("/clerk")[0] == 200
    assert rig.own_events("gateway.alarm_acknowledged") == []
    # A page on another site posting with the right token is refused on its Origin.
    code, _, _ = c.post("/clerk/alarm", {"csrf": good, "alarm": rig.alarm_ordinary, "action": "acknowledge"},
                        headers={"Origin": "http://evil.example"})
    assert code == 403
    code, _, _ = c.post("/clerk/alarm", {"csrf": good, "alarm": rig.alarm_ordinary, "action": "acknowledge"},
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert code == 403
    assert rig.own_events("gateway.alarm_acknowledged") == []
    code, _, _ = c.post("/clerk/alarm", {"csrf": good, "alarm": rig.alarm_ordinary, "action": "acknowledge"},
                        headers={"Origin": rig.url})
    assert code == 303 and len(rig.own_events("gateway.alarm_acknowledged")) == 1


# ------------------------------------------------------------------ throttling

def test_brute_force_is_throttled_per_account_and_per_address(rig: Rig) -> None:
    c = rig.client()
    codes = [c.login("anna", f"wrong-password-{i}") for i in range(S.FREE_FAILS)]
    assert codes == [401] * (S.FREE_FAILS - 1) + [401]
    code, hdrs, html = c.post("/clerk/login", {"name": "anna", "password": PASSWORDS["anna"]})
    assert code == 429 and int(hdrs["retry-after"]) > 0  # the right password waits too
    assert "pe_clerk" not in c.cookies
    # The same address trying another account is locked as well (per address).
    assert c.login("bo") == 429
    failed = rig.own_events("gateway.clerk_login_failed")
    assert len(failed) == S.FREE_FAILS  # throttled tries are not audited one by one
    assert failed[-1]["body"]["locked"] is True
    for _ in range(20):
        assert c.login("anna", "still-guessing") == 429
    assert len(rig.own_events("gateway.clerk_login_failed")) == S.FREE_FAILS
    # Unlocked once the lock expires: the right password then works and clears both keys.
    store = rig.store()
    try:
        store.db.execute("UPDATE clerk_throttle SET locked_until=0")
    finally:
        store.close()
    assert c.login("anna") == 303
    store = rig.store()
    try:
        assert store.db.execute("SELECT count(*) FROM clerk_throttle").fetchone()[0] == 0
    finally:
        store.close()


def test_lockout_grows_and_is_capped() -> None:
    now = 1_000_000.0
    fails, first, until = 0, now, 0.0
    waits = []
    for _ in range(12):
        fails, first, until = S.after_failure(fails, first, now)
        waits.append(until - now if until else 0)
    assert waits[:S.FREE_FAILS - 1] == [0] * (S.FREE_FAILS - 1)
    assert waits[S.FREE_FAILS - 1] == S.LOCK_BASE_S and waits[S.FREE_FAILS] == 2 * S.LOCK_BASE_S
    assert max(waits) == S.LOCK_MAX_S
    assert S.after_failure(fails, first, now + S.FORGET_S + 1)[0] == 1  # forgotten after an hour


# ------------------------------------------------------------------ roles

def test_a_clerk_cannot_do_what_only_a_supervisor_may(rig: Rig) -> None:
    c = rig.client()
    assert c.login("bo") == 303
    csrf = c.csrf()
    for action in ("open", "out_of_service", "in_service"):
        code, _, html = c.post("/clerk/compartment", {"csrf": csrf, "device": "lk01", "compartment": "3",
                                                      "action": action, "note": "villager lost code",
                                                      "lang": "en"})
        assert code == 403 and "supervisor" in html.lower()
    code, _, _ = c.post("/clerk/alarm", {"csrf": csrf, "alarm": rig.alarm_critical, "action": "acknowledge",
                                         "note": "seen"})
    assert code == 403
    assert rig.own_events("gateway.clerk_request") == []
    assert rig.own_events("gateway.alarm_acknowledged") == []
    code, _, _ = c.post("/clerk/alarm", {"csrf": csrf, "alarm": rig.alarm_ordinary, "action": "acknowledge",
                                         "note": "closed it"})
    assert code == 303
    _, _, html = c.get("/clerk?lang=en")
    assert "request remote open" not in html.lower()  # a clerk is not offered the buttons
    s = rig.client()
    assert s.login("anna") == 303
    code, _, _ = s.post("/clerk/alarm", {"csrf": s.csrf(), "alarm": rig.alarm_critical,
                                         "action": "acknowledge", "note": "police called"})
    assert code == 303
    ev = rig.own_events("gateway.alarm_acknowledged")
    assert [(e["body"]["by"], e["body"]["role"], e["body"]["alarm"]) for e in ev] == [
        ("bo", "clerk", "door_left_open"), ("anna", "supervisor", "door_forced")]


# ------------------------------------------------------------------ alarms

def test_acknowledged_alarms_stop_turning_the_public_page_red(rig: Rig) -> None:
    c = rig.client()
    _, _, page = c.get("/?lang=en")
    assert 'data-level="alarm"' in page and 'class="tile t-bad" id="tile-alarms"' in page
    assert c.login("anna") == 303
    csrf = c.csrf()
    for aid in (rig.alarm_ordinary, rig.alarm_critical):
        assert c.post("/clerk/alarm", {"csrf": csrf, "alarm": aid, "action": "acknowledge",
                                       "note": "on it"})[0] == 303
    _, _, page = c.get("/?lang=en")
    assert 'data-level="alarm"' not in page and "acknowledged by anna" in page
    assert 'class="tile t-warn" id="tile-alarms"' in page  # no longer red
    api = json.loads(c.get("/api/status")[2])
    assert all(a["ack"]["state"] == "acknowledged" for a in api["alarms"])
    assert "on it" not in page and all("note" not in a["ack"] for a in api["alarms"])  # notes: console only
    code, _, html = c.post("/clerk/alarm", {"csrf": csrf, "alarm": rig.alarm_ordinary, "action": "resolve"})
    assert code == 400  # resolving needs a note
    assert c.post("/clerk/alarm", {"csrf": csrf, "alarm": rig.alarm_ordinary, "action": "resolve",
                                   "note": "door shut, parcel fine"})[0] == 303
    [res] = rig.own_events("gateway.alarm_resolved")
    assert res["cls"] == "audit" and res["body"]["note"] == "door shut, parcel fine"
    assert res["synced_at"] is None  # waits for the syncer like every event
    ack = {"csrf": csrf, "action": "acknowledge"}
    assert c.post("/clerk/alarm", {**ack, "alarm": "lk01:0c1e2a3b:999"})[0] == 404
    # A custody event is not an alarm.
    assert c.post("/clerk/alarm", {**ack, "alarm": "lk01:0c1e2a3b:3"})[0] == 404


def test_xss_in_an_alarm_note_and_in_event_bodies_is_text(rig: Rig) -> None:
    c = rig.client()
    assert c.login("anna") == 303
    assert c.post("/clerk/alarm", {"csrf": c.csrf(), "alarm": rig.alarm_ordinary, "action": "acknowledge",
                                   "note": XSS})[0] == 303
    for path in ("/clerk?lang=en", f"/clerk?lang=zh&q={PARCEL}", "/clerk/feed", "/?lang=en", "/fragment"):
        _, hdrs, html = c.get(path)
        assert "<script>window" not in html and "<img src=x" not in html, path
        csp = hdrs["content-security-policy"]
        assert csp.startswith("default-src 'none'") and "unsafe" not in csp
    _, _, html = c.get("/clerk?lang=en")
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in html


# ------------------------------------------------------------------ inputs

def test_over_long_and_malformed_inputs_get_a_clear_error_and_store_nothing(rig: Rig) -> None:
    c = rig.client()
    assert c.login("anna") == 303
    csrf = c.csrf()
    ack = {"csrf": csrf, "alarm": rig.alarm_ordinary, "action": "acknowledge"}
    code, _, html = c.post("/clerk/alarm", {**ack, "note": "x" * 501})
    assert code == 400 and "500" in html
    code, _, html = c.post("/clerk/alarm", {**ack, "note": "x" * 9000})
    assert code == 413
    code, _, _ = c.post("/clerk/login", {"name": "n" * 33, "password": "p" * 20})
    assert code == 400
    code, _, _ = c.post("/clerk/login", {"name": "anna", "password": "p" * 300})
    assert code == 400
    _, _, html = c.get("/clerk?lang=en&q=" + "A" * 65)
    assert "too long" in html
    _, _, html = c.get("/clerk?lang=en&q=%3Cscript%3E")
    assert "Enter a waybill" in html
    for form in ({"device": "lk01", "compartment": "abc", "action": "open"},
                 {"device": "../../etc", "compartment": "3", "action": "open"},
                 {"device": "lk01", "compartment": "3", "action": "explode"},
                 {"device": "lk01", "compartment": "99", "action": "out_of_service"},
                 {"device": "lk01", "compartment": "3", "action": "open"}):  # an open needs a reason
        code, _, _ = c.post("/clerk/compartment", {"csrf": csrf, **form})
        assert code in (400, 404), form
    code, _, _ = c.request("POST", "/clerk/alarm", raw=b"&".join([b"a=1"] * 50),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 403  # too many fields: parsed as nothing, so no CSRF token
    code, _, _ = c.request("PUT", "/clerk/alarm")
    assert code == 405
    # A body shorter than it said (the browser walked out of Wi-Fi range): no answer or a 400, the
    # server lives on.
    import socket

    with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as sock:
        sock.sendall(b"POST /clerk/alarm HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\ncsrf=")
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(100)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
    code, _, _ = c.request("POST", "/clerk/alarm", headers={"Transfer-Encoding": "chunked"}, raw=b"")
    assert code in (400, 411)
    assert rig.own_events("gateway.clerk_request") == []
    assert rig.own_events("gateway.alarm_acknowledged") == []
    assert c.get("/healthz")[0] == 200


# ------------------------------------------------------------------ search, feed, summary

def test_parcel_search_by_waybill_and_phone_tail_with_history(rig: Rig) -> None:
    c = rig.client()
    assert c.login("bo") == 303
    _, _, html = c.get("/clerk?lang=en&q=ee000000002cn")
    assert 'data-parcel="EE000000002CN"' in html
    assert html.index("Delivered by courier") < html.index("Not collected in time")
    _, _, html = c.get("/clerk?lang=zh&q=5678")
    assert f'data-parcel="{PARCEL}"' in html and "快递员投递" in html
    _, _, html = c.get("/clerk?lang=en&q=RB999999999CN")
    assert "No records of this parcel" in html
    searches = rig.own_events("gateway.clerk_search")
    assert [(e["body"]["kind"], e["body"]["parcels"]) for e in searches] == [
        ("waybill", 1), ("phone_tail", 1), ("waybill", 0)]


def test_phone_tail_search_finds_a_parcel_by_its_notification_contact(rig: Rig) -> None:
    """A contact the platform pushed (the notifier's ``notify_contacts``, as
    ``Notifier.absorb_contacts`` keeps it) finds its parcel by the last four
    digits, and every result shows its tail, never the whole number."""
    store = rig.store()
    try:
        with store.tx():
            ensure_schema(store.db)
            store.db.execute("INSERT INTO notify_contacts(parcel, phone, lang, cid, received) "
                             "VALUES (?, ?, 'zh', 'ct-1', ?)",
                             ("EE000000002CN", "+8613900001234", time.time()))
    finally:
        store.close()
    c = rig.client()
    assert c.login("bo") == 303
    _, _, html = c.get("/clerk?lang=en&q=1234")
    assert 'data-parcel="EE000000002CN"' in html and "phone ends 1234" in html
    assert "13900001234" not in html and "Not collected in time" in html
    _, _, html = c.get("/clerk?lang=zh&q=ee000000002cn")
    assert "收件人手机尾号 1234" in html
    _, _, html = c.get("/clerk?lang=en&q=5678")  # the tail a deposit event carried
    assert f'data-parcel="{PARCEL}"' in html and "phone ends 5678" in html
    _, _, html = c.get("/clerk?lang=en&q=9999")
    assert "No records of this parcel" in html
    assert [e["body"]["parcels"] for e in rig.own_events("gateway.clerk_search")] == [1, 1, 1, 0]


def test_public_page_shows_no_parcel_ids_and_the_console_does(rig: Rig) -> None:
    c = rig.client()
    for path in ("/?lang=en", "/fragment", "/api/status"):
        assert PARCEL not in c.get(path)[2], path
    assert c.login("bo") == 303
    assert c.get("/clerk/feed")[0] == 200


def test_scan_feed_in_words_with_misrouted_and_refused_highlighted(rig: Rig) -> None:
    c = rig.client()
    assert c.get("/clerk/feed")[0] == 303  # behind the login
    assert c.login("bo") == 303
    _, _, html = c.get("/clerk/feed?lang=en")
    assert "scanner.intake" not in html and "scanner.misrouted" not in html
    assert html.count("Received at the counter") == 2
    assert html.count('class="scan misrouted"') == 2  # the manifest's verdict and another outlet's parcel
    assert html.count('class="scan refused"') == 1 and "Barcode refused (wrong S10 check digit)" in html
    _, _, zh = c.get("/clerk/feed?lang=zh")
    assert "柜台收件登记" in zh and "不是本网点的包裹" in zh


def test_requests_wait_for_the_platform_while_the_link_is_down(rig: Rig) -> None:
    c = rig.client()
    assert c.login("anna") == 303
    csrf = c.csrf()
    assert c.post("/clerk/compartment", {"csrf": csrf, "device": "lk01", "compartment": "4",
                                         "action": "out_of_service", "note": "hinge broken"})[0] == 303
    assert c.post("/clerk/compartment", {"csrf": csrf, "device": "lk01", "compartment": "3",
                                         "action": "open", "note": "villager's code expired"})[0] == 303
    reqs = rig.own_events("gateway.clerk_request")
    assert [(e["body"]["request"], e["body"]["compartment"]) for e in reqs] == [
        ("out_of_service", 4), ("open", 3)]
    assert all(e["cls"] == "audit" and e["synced_at"] is None for e in reqs)
    _, _, html = c.get("/clerk?lang=en")
    assert "waiting for the platform" in html.lower() and html.count('data-stage="waiting_link"') == 2
    # The syncer delivers them (the platform acked), then the platform signs a command for one.
    store = rig.store()
    try:
        store.mark_synced([e["id"] for e in reqs])
        cmd = {"id": "c-1", "op": "open", "args": {"compartment": 3, "request": reqs[1]["id"]}, "exp": 9}
        store.db.execute("INSERT INTO commands(ns,id,device,kind,op,payload,exp,created) VALUES "
                         "('', 'c-1', 'lk01', 'locker', 'open', ?, 9, ?)",
                         (json.dumps(cmd).encode(), time.time()))
    finally:
        store.close()
    _, _, html = c.get("/clerk?lang=zh")
    assert 'data-stage="sent"' in html and 'data-stage="cmd_queued"' in html and "waiting_link" not in html


def test_handover_summary_counts_the_day(rig: Rig) -> None:
    c = rig.client()
    assert c.login("anna") == 303
    assert c.post("/clerk/alarm", {"csrf": c.csrf(), "alarm": rig.alarm_ordinary, "action": "resolve",
                                   "note": "closed"})[0] == 303
    _, _, html = c.get("/clerk?lang=en")
    summary = html[html.index('id="summary"'):]
    want = {"deposits": 2, "pickups": 0, "scans": 2, "misrouted": 1, "alarms": 2, "alarms_resolved": 1,
            "alarms_open": 1, "requests_open": 0, "retrieval": 1}
    for k, v in want.items():
        assert f'data-k="{k}"' in summary
        row = summary[summary.index(f'data-k="{k}"'):]
        assert row[row.index("<td>") + 4:row.index("</td>")] == str(v), k


def test_console_without_an_outlet_is_503_and_the_page_still_works(tmp_path: Path) -> None:
    import threading

    from gateway.http.server import start_web
    from tests.gateway.clerk_rig import Client

    db = tmp_path / "gateway.db"
    EventStore(db).close()
    stop = threading.Event()
    svc = start_web(db, {"host": "127.0.0.1", "port": 0}, stop)
    try:
        c = Client(svc.port)
        assert c.get("/clerk")[0] == 503
        assert c.get("/")[0] == 200
    finally:
        stop.set()
        svc.join(10)


def _gateway_section(html: str) -> str:
    start = html.index('<section id="gateway"')
    return html[start:html.index("</section>", start)]


@pytest.mark.parametrize("upstream", [False, True], ids=["no-upstream", "upstream"])
def test_console_shows_the_gateway_itself_and_devices_that_never_connected(tmp_path: Path,
                                                                           upstream: bool) -> None:
    """The clerk's page showed the devices' trouble and nothing of
    the gateway's own; a provisioned scanner that never connected was invisible. Now,
    beside the alarms: the gateway's broker link and since when, ``[upstream]``
    configured or not, the last successful upload and its age, the backlog, and the
    devices counted from the broker's logins (the provisioning inventory)."""
    import re

    from tests.gateway.clerk_rig import NEVER, provisioned

    rig = Rig(tmp_path, web=lambda db: provisioned(tmp_path, db, upstream=upstream))
    try:
        c = rig.client()
        assert c.login("bo") == 303
        code, _, html = c.get("/clerk?lang=zh")
        assert code == 200
        assert html.index('<section id="alarms">') < html.index('<section id="gateway"')
        gw = _gateway_section(html)
        # lk01 and sc01 have connected; sc02 has a login and never came
        assert "设备在线 2 / 3，其中 1 台从未连接" in gw
        row = re.search(rf'<li class="dev off never" data-device="{NEVER}">(.*?)</li>', gw)
        assert row and "从未连接" in row.group(1), gw
        assert re.search(r'<li class="dev on" data-device="lk01">.*?在线.*?</li>', gw), gw
        assert "网关已连上消息代理，已有 2 小时 5 分钟" in gw
        assert "最近一次上传成功：7 分钟前" in gw
        assert re.search(r"网关上待上传 \d+ 条", gw), gw
        if upstream:
            assert "已配置上传到平台" in gw and "没有配置上传" not in gw
        else:
            assert "没有配置上传到平台" in gw and "恢复后自动上传" not in gw
        _, _, en = c.get("/clerk?lang=en")
        gw = _gateway_section(en)
        assert "Devices online: 2 of 3; 1 never connected" in gw
        assert "Last successful upload: 7 min ago" in gw
        assert ("Uploading to the platform is configured" in gw) is upstream
        assert ("Uploading to the platform is not configured" in gw) is not upstream

        # The gateway loses its broker, and never uploaded: said so, in red.
        store = rig.store()
        try:
            with store.tx():
                store.put("broker_link", json.dumps({"up": False, "since": time.time() - 600}))
                store.db.execute("DELETE FROM kv WHERE key='last_sync_at'")
        finally:
            store.close()
        _, _, html = c.get("/clerk?lang=zh")
        gw = _gateway_section(html)
        assert re.search(r'class="gw-broker tone-bad"[^>]*>网关与消息代理断开已有 10 分钟', gw), gw
        assert "最近一次上传成功：从未" in gw
        # the block alone, which the open console re-reads; behind the login like the rest
        code, _, part = c.get("/clerk/gateway?lang=en")
        assert code == 200 and part.startswith('<section id="gateway"') and part.endswith("</section>")
        assert "cut off from its message broker for 10 min" in part and "never connected" in part
        assert rig.client().get("/clerk/gateway")[0] == 303
    finally:
        rig.close()
