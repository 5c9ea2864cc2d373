"""Round manifests and village points issued by the platform (``central/manifests.py``):
what it signs is what the real handheld application verifies and works from. The
villager's delivery token and the point agent's code are made on the platform, leave it
once, and are checked on the handheld offline from the salted hashes the manifest
carries; the platform keeps no token or code. Each runs on both backends (the
``duty_store`` fixture: SQLite, and PostgreSQL on scale-out)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.manifests import ManifestRefused, Manifests
from common.ports import free_port
from handheld.app import HandheldApp
from protocol import canonical, envelope
from simulator.platform_keys import MASTER
from tests.central.conftest import StoreUnderTest
from tests.handheld.test_handheld_app import DEV, OUTLET, make_config

P1, P2, P3 = "RB123456785GB", "EA123456785CN", "RR000000014CN"


@pytest.fixture
def platform(duty_store: StoreUnderTest) -> Manifests:
    b = duty_store.b
    b.add_outlet(OUTLET, "password-of-the-outlet")
    b.add_device(OUTLET, DEV, "handheld")
    b.add_device(OUTLET, "hh09", "handheld")
    b.retire_device(OUTLET, "hh09")
    b.add_device(OUTLET, "lk01", "locker")
    return Manifests(b, MASTER)


@pytest.fixture
def handheld(tmp_path: Path) -> Iterator[HandheldApp]:
    app = HandheldApp(make_config(tmp_path / "hh", free_port()))  # not started: no broker needed
    try:
        yield app
    finally:
        app.stop()


def queued(app: HandheldApp, etype: str) -> list[dict[str, Any]]:
    """The events of ``etype`` in the outbox (the command's ack waits there too)."""
    events = [envelope.decode(p) for _s, _c, topic, p in app.outbox.pending(1000) if topic.endswith("/evt")]
    return [e for e in events if e["type"] == etype]


def test_the_handheld_takes_the_platforms_manifest_and_its_secrets_work(platform: Manifests,
                                                                         handheld: HandheldApp) -> None:
    code = platform.add_point(OUTLET, "vp-xiakou", "下口小卖部", agent="陈代办")
    assert code is not None and code.startswith("PE-H:")
    platform.add_point(OUTLET, "vp-shangpo", "上坡村委")
    cmd, tokens = platform.issue(OUTLET, DEV, "r-1204", [
        {"parcel": P1, "to": "王芳"},
        {"parcel": "]C0" + P2, "to": "李伟", "point": "vp-xiakou"},
        {"parcel": P3, "to": "张强", "token": False}])
    assert set(tokens) == {P1, P2}
    # what the handheld does with a command from its link: verify with its own key, apply
    assert handheld.handle_command(canonical.dumps(cmd)) == "ok"
    assert {p["parcel"] for p in handheld.flows.view()["parcels"]} == {P1, P2, P3}
    assert handheld.flows.hand_delivery(P1, "code", tokens[P1])["ok"]
    [ev] = queued(handheld, "handheld.hand_delivery")
    assert tokens[P1] not in json.dumps(ev)
    # the agent's code confirms a handover to the point
    handheld.dispatch.set_point("vp-xiakou")
    assert handheld.dispatch.handover_add(handheld.flows, P2)["ok"]
    assert handheld.dispatch.handover(handheld.flows, "token", code)["ok"]
    [ho] = queued(handheld, "handheld.point_handover")
    assert ho["body"]["items"] == [P2] and ho["body"]["agent"] == "陈代办"
    # the platform kept no token and no code, only salts and hashes
    dump = "\n".join(str(r) for t in ("village_points", "manifests") for r in platform.b.rows(t, {}))
    assert "vp-xiakou" in dump and "r-1204" in dump
    for secret in (code, *tokens.values()):
        raw = secret.removeprefix("PE-H:").replace("-", "")
        assert secret not in dump and raw not in dump


def test_a_manifest_the_platform_will_not_issue(platform: Manifests) -> None:
    platform.add_point(OUTLET, "vp-xiakou", "下口小卖部")
    good = [{"parcel": P1, "to": "王芳"}]
    cases = {
        "another outlet's device": (DEV.replace("hh", "zz"), "r-1", good),
        "a retired handheld": ("hh09", "r-1", good),
        "a locker": ("lk01", "r-1", good),
        "a bad round id": (DEV, "r 1", good),
        "no parcels": (DEV, "r-1", []),
        "a product code": (DEV, "r-1", [{"parcel": "9780471117094", "to": "王芳"}]),
        "a bad check digit": (DEV, "r-1", [{"parcel": "RB123456784GB", "to": "王芳"}]),
        "no name": (DEV, "r-1", [{"parcel": P1, "to": " "}]),
        "an unknown point": (DEV, "r-1", [{"parcel": P1, "to": "王芳", "point": "vp-nowhere"}]),
        "twice": (DEV, "r-1", [{"parcel": P1, "to": "王芳"}, {"parcel": "]C0" + P1, "to": "王芳"}]),
    }
    for why, (dev, rnd, parcels) in cases.items():
        with pytest.raises(ManifestRefused):
            platform.issue(OUTLET, dev, rnd, parcels)
        assert platform.b.pull(OUTLET, 0, 10)[1] == [], why
    with pytest.raises(ManifestRefused):
        platform.add_point(OUTLET, "vp/x", "下口")
    with pytest.raises(ManifestRefused):
        platform.add_point(OUTLET, "vp-x", "下口", agent="")


def test_a_round_issued_again_is_the_same_command_id(platform: Manifests) -> None:
    """A round re-issued (a changed list) replaces the last on the handheld; its command id
    is the round's, so a handheld that ran the first refuses a replay of it, not the new."""
    first, _ = platform.issue(OUTLET, DEV, "r-1", [{"parcel": P1, "to": "王芳"}])
    second, _ = platform.issue(OUTLET, DEV, "r-2", [{"parcel": P1, "to": "王芳"}])
    assert first["id"] != second["id"] and first["args"]["round"] == "r-1"
    assert [k for k, _ in platform.b.pull(OUTLET, 0, 10)[1]] == ["handheld", "handheld"]
