"""What a scan leaves behind on the handheld.

A courier's scanner reads whatever is held under it: a customer's payment code, an ID
card's number, a delivery token. Such a read, in any mode and from any source, must
not reach the gateway's store, the gateway's or the handheld's logs, the handheld's
outbox and state files, or what the screen keeps: it leaves its verdict, reason, kind,
symbology, length and sha8 (protocol/scantrace.py). A parcel id keeps its content.

Real Mosquitto, the real gateway process and its SQLite store, the real handheld app;
the scans go through the UI's own request handler (``handheld.webui.handle_post``) and
the serial engine's call (``HandheldApp.scan``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.broker import Mosquitto
from handheld import webui
from handheld.app import HandheldApp
from protocol import barcodes, scantrace
from simulator.outlet import stored_events
from tests.handheld.gateway_rig import RealGateway, files_bytes, handheld_logs
from tests.handheld.test_handheld_app import GOOD, make_config
from tests.waiting import within

#: An Alipay-style payment code (付款码: 18 digits from 25-30), failing the GS1 check digit.
PAYMENT = "288812345678901234"
#: One that passes it, so the barcode rules call it an SSCC (one in ten do).
PAYMENT_SSCC = "288812345678901235"
#: The same code as a Code 128 engine with AIM identifiers sends it.
PAYMENT_AIM = "]C0288812345678901237"
ALIPAY_URL = "https://qr.alipay.com/fkx18497cmqxmpjfzxrnq3b"
ID_NUMBER = "11010519491231002X"
ID_DIGITS = "440308199901011239"  # an 18-digit ID number that passes the GS1 check digit
TOKEN = "PE-H:ABCD-EFGH-JKMN-PQRS"  # a recipient's delivery token, scanned in the wrong field
SECRETS = [PAYMENT, PAYMENT_SSCC, PAYMENT_AIM, ALIPAY_URL, ID_NUMBER, ID_DIGITS, TOKEN]
#: What must appear nowhere: each secret's data (without the AIM identifier).
NEEDLES = [s[3:] if s.startswith("]") else s for s in SECRETS]
_SSCC_BODY = "36901234500000001"
GS1_SSCC = _SSCC_BODY + str(barcodes.gs1_check_digit(_SSCC_BODY))


def post(app: HandheldApp, route: str, doc: dict[str, Any]) -> dict[str, Any]:
    return webui.handle_post(app, ["api", route], {}, "application/json", json.dumps(doc).encode())


def leaks(blob: str | bytes) -> list[str]:
    b = blob.encode() if isinstance(blob, str) else blob
    return [n for n in NEEDLES if n.encode() in b]


@pytest.mark.slow
def test_a_payment_code_or_id_number_scanned_by_mistake_leaves_no_content(
        tmp_path: Path, broker: Mosquitto) -> None:
    assert PAYMENT_SSCC in {barcodes.classify(PAYMENT_SSCC).get("value")}  # the hard case: "valid"
    with RealGateway(tmp_path / "gw", broker) as gw, handheld_logs() as logs:
        cfg = make_config(tmp_path, broker.port, gateway_url=gw.url,
                          scan={"same_window_s": 0.0, "other_window_s": 0.0})
        app = HandheldApp(cfg).start()
        answers: list[dict[str, Any]] = []
        screens: list[str] = []
        try:
            assert app.link.subscribed.wait(10), app.link.last_error
            for s in SECRETS:
                # check mode: the page's field, a wedge burst, the serial engine
                answers.append(post(app, "scan", {"code": s, "mode": "check"}))
                answers.append(post(app, "wedge", {"raw": s, "age_ms": 0}))
                answers.append(app.scan(s, "check", source="engine"))
                # the parcel flows: deposit and collection judge it against their lists; intake
                # has none, and takes no 18 bare digits as an SSCC
                for mode in ("intake", "deposit", "collect", "deliver"):
                    answers.append(post(app, "scan", {"code": s, "mode": mode}))
                # what the screen and /api/state keep after each read
                screens += [webui.part_status(app, g) + webui.part_scan(app, g) for g in ("zh", "en")]
                screens.append(json.dumps(app.status(), default=str))
            # a parcel id keeps its content: an S10 and an SSCC in its GS1 element string
            answers.append(post(app, "scan", {"code": GOOD, "mode": "check"}))
            answers.append(app.scan("]C100" + GS1_SSCC, "check", source="engine"))
            # 3 check-mode events and one each from intake, deposit and collect per secret, 2 parcels
            want = 6 * len(SECRETS) + 2

            def scans() -> list[dict[str, Any]]:
                return [e["body"] for e in stored_events(gw.db) if e["type"] == "handheld.scan"]

            assert within(lambda: len(scans()) >= want and app.outbox.count() == 0), \
                (len(scans()), app.outbox.count())
            state = files_bytes(Path(cfg.state_dir))
        finally:
            app.stop()
        gateway_files = files_bytes(tmp_path / "gw")
        gateway_log = gw.log_text()

    bodies = scans()
    assert [b["code"] for b in bodies if "code" in b] == [GOOD, GS1_SSCC]
    fps = {scantrace.fingerprint(n)["sha8"] for n in NEEDLES}
    for b in bodies[:-2]:
        assert set(b) >= {"length", "sha8", "kind", "verdict", "reason", "source"}, b
        assert b["sha8"] in fps and b["verdict"] in ("invalid", "good", "wrong_route"), b
    kinds = {b["sha8"]: b["kind"] for b in bodies[:-2]}
    assert kinds[scantrace.fingerprint(PAYMENT_SSCC)["sha8"]] == "sscc"
    assert kinds[scantrace.fingerprint(TOKEN)["sha8"]] == "pe_token"
    aim_sha8 = scantrace.fingerprint(PAYMENT_AIM[3:])["sha8"]
    assert {b.get("symbology") for b in bodies if b.get("sha8") == aim_sha8} == {"code128"}
    # the same code with and without its AIM identifier: one sha8
    assert scantrace.fingerprint(PAYMENT_AIM[3:]) == {k: v for k, v in scantrace.trace(PAYMENT_AIM).items()
                                                       if k in ("length", "sha8")}

    assert not leaks(gateway_files), "the gateway's store holds a scanned payment code or ID"
    assert not leaks(gateway_log), "the gateway's log holds a scanned payment code or ID"
    assert not leaks(state), "the handheld's outbox or state files hold a scanned payment code or ID"
    assert not leaks("\n".join(logs.lines)), "the handheld's log holds a scanned payment code or ID"
    assert not leaks(json.dumps(answers, ensure_ascii=False, default=str)), "the page was sent it back"
    assert not leaks("".join(screens)), "the screen or /api/state keeps it"
    bare = [a for a in answers if a.get("code") == "bare_sscc"]
    assert len(bare) == 2 and all(a["verdict"] == "invalid" and "(00)" in a["zh"] for a in bare)
    assert not [e for e in stored_events(gw.db) if e["type"] == "handheld.intake"]
    # the screen still tells the courier which read it was: a refused one by its sha8
    refused = [a for a in answers if a.get("verdict") == "wrong_route"]
    assert refused and all(f"#{a['sha8']}" in a["en"] + a["zh"] for a in refused)


def test_trace_keeps_parcel_ids_and_known_values_only() -> None:
    assert scantrace.trace(GOOD) == {"code": GOOD, "kind": "s10"}
    assert scantrace.trace(" " + GOOD + "\r\n")["code"] == GOOD
    assert scantrace.trace("]C100" + GS1_SSCC) == {"code": GS1_SSCC, "kind": "sscc"}
    bare = scantrace.trace(GS1_SSCC)
    assert "code" not in bare and bare["kind"] == "sscc"
    # a value the platform named for this handheld (its manifest) is known: kept
    assert scantrace.trace(GS1_SSCC, {GS1_SSCC})["code"] == GS1_SSCC
    assert "code" not in scantrace.trace(PAYMENT, {GS1_SSCC})
    ean = scantrace.trace("]E04006381333931")
    assert ean == {"kind": "ean13", "symbology": "ean13", **scantrace.fingerprint("4006381333931")}
    assert scantrace.trace("PE-PAIR:whatever")["kind"] == "pe_pair"
    assert scantrace.trace(None) == {"length": 0, "sha8": "e3b0c442"}
