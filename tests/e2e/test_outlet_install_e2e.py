"""``postedge outlet init --install`` as root, for real, without changing
the box: the run happens in a private mount namespace where /etc and
/var/lib are overlays on throwaway folders (``outlet_install_ns.py``). It
creates the ``postedge`` account in the broker's group, its state folder,
installs and enables both units; with no systemd as init here (a
container) it says nothing was started and prints how to start each part;
those printed commands start a broker and a gateway, as the service
account, that serve the clerk's page; a second run changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.ports import free_port

HERE = Path(__file__).parent

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _namespaces_work() -> str | None:
    """Why this box cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root (CI runs as root)"
    if shutil.which("unshare") is None:
        return "no unshare"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return None if r.returncode == 0 else "no mount namespaces here: " + r.stderr.decode()[:200]


def test_install_as_root_creates_the_account_units_and_a_serving_outlet(tmp_path: Path) -> None:
    why = _namespaces_work()
    if why is not None:
        pytest.skip(why)
    web_port, port, tls_port = free_port(), free_port(), free_port()
    spec = tmp_path / "outlet.toml"
    spec.write_text(f"""
outlet = "o1"
address = "127.0.0.1"
[broker]
port = {port}
tls_port = {tls_port}
listen = "127.0.0.1"
[web]
port = {web_port}
[[lockers]]
id = "lk01"
[[handhelds]]
id = "hh01"
""")
    spec.chmod(0o644)
    result = tmp_path / "result.json"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                        str(HERE / "outlet_install_ns.py"), str(spec), str(tmp_path / "ns"), str(result),
                        str(web_port)], capture_output=True, text=True, timeout=600, cwd=HERE.parent.parent)
    assert r.returncode == 0, r.stderr
    doc = json.loads(result.read_text())
    init0 = doc["init0"]
    if init0["rc"] != 3:  # the service account could run this checkout's program: nothing to refuse
        assert init0["rc"] == 3 or "systemd is not this box's init" in init0["err"], init0
    else:  # a Python under /root, a 0700 folder: said at once, not by a unit failing at every start
        assert "the postedge account cannot run" in init0["err"] and "/opt/postedge" in init0["err"], init0
    init1 = doc["init1"]
    # no systemd as init here: installed and enabled, nothing started, exit 3 and why
    assert init1["rc"] == 3, init1
    assert "systemd is not this box's init" in init1["err"]
    made = init0["out"] + init1["out"]  # the account is made by the first run, refused or not
    for step in ("useradd postedge", "usermod -aG mosquitto postedge", "mkdir /var/lib/postedge",
                 "install /etc/systemd/system/postedge-gateway.service",
                 "systemctl enable postedge-mosquitto.service"):
        assert f"done: {step}" in made, (step, made)
    assert doc["groups"] == ["mosquitto"]
    assert doc["state_dir"] == [True, "0o750"]
    assert doc["units"] == ["postedge-gateway.service", "postedge-mosquitto.service"]
    assert {"postedge-gateway.service", "postedge-mosquitto.service"} <= set(doc["wants"])
    # the printed commands start a serving outlet, the gateway as the service account
    assert "runuser -u postedge" in doc["commands"]["gateway"], doc["commands"]
    assert doc["served"] is not None and doc["served"].startswith("HTTP/1.1 "), (doc["served"], doc["logs"])
    ours = "gateway run --config /etc/postedge/gateway.toml"
    gw = [ln.split(None, 1) for ln in doc["ps"].splitlines()
          if ours in ln and "runuser" not in ln and " sh -c" not in ln]
    assert gw and {u for u, _ in gw} == {"postedge"}, doc["ps"]
    # a second run: no account or file to make again
    init2 = doc["init2"]
    assert init2["rc"] == 3 and "nothing changed" in init2["out"], init2
    assert "useradd" not in init2["out"] and "install /etc/systemd" not in init2["out"]
    # and nothing of it reached the box
    assert subprocess.run(["id", "postedge"], capture_output=True).returncode != 0
    assert not Path("/etc/systemd/system/postedge-gateway.service").exists()
