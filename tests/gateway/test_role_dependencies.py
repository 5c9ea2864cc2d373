"""A gateway box installs ``postedge[gateway]`` only: no OpenCV, zxing-cpp,
amqtt or mpremote (pyserial is the gateway's too: the counter's
scale and printers and the SMS notifier's modem hang off the box over
serial). Every gateway module, and the CLI's gateway
commands, must work without them; a subprocess that refuses to import them
proves it (an import of one anywhere on the gateway's path fails here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_ON_A_GATEWAY = ("cv2", "zxingcpp", "amqtt", "mpremote", "numpy", "playwright")

PROBE = f"""
import importlib, pkgutil, sys
BLOCKED = {NOT_ON_A_GATEWAY!r}

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not installed on a gateway box")
        return None

sys.meta_path.insert(0, NotInstalled())
import gateway
mods = [i.name for i in pkgutil.walk_packages(gateway.__path__, "gateway.")]
for m in mods:
    importlib.import_module(m)
from postedge import cli
sys.argv = ["postedge", "--lang", "en", "gateway", "status", "--config", sys.argv[1]]
try:
    cli.main()
except SystemExit as e:
    assert e.code in (None, 0, 3), e.code  # 3: no gateway is running here
print("modules", len(mods))
"""


def test_gateway_runs_without_the_other_roles_packages(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'outlet = "o1"\ndb = "{tmp_path / "gw.db"}"\n\n[web]\nport = 0\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-c", PROBE, str(cfg)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "outlet o1" in r.stdout
    assert int(r.stdout.split("modules")[1]) >= 20, r.stdout


def test_the_probe_would_notice_an_import_of_opencv(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", PROBE.replace("import gateway\n", "import gateway, cv2\n"),
                        str(tmp_path / "none.toml")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0 and "not installed on a gateway box" in r.stderr
