"""Run inside a private mount namespace by test_outlet_install_e2e.py, as
root: /etc and /var/lib are overlaid on throwaway folders, so ``outlet init
--install`` creates its account, folders and units for real without
touching the box. Then starts each part with the command init printed and
writes what it found to RESULT (JSON).

Usage: python outlet_install_ns.py SPEC WORK RESULT WEB_PORT"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

spec, work, result, web_port = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
for top, name in (("/etc", "etc"), ("/var/lib", "varlib")):
    up, wk = work / f"{name}-up", work / f"{name}-work"
    up.mkdir(parents=True)
    wk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={top},upperdir={up},workdir={wk}", top], check=True)

out = Path("/etc/postedge")
cli = [sys.executable, "-m", "postedge.cli", "--lang", "en", "outlet", "init", str(spec), "--out", str(out),
       "--install"]
doc: dict = {}
refused = subprocess.run(cli, capture_output=True, text=True, timeout=300)
doc["init0"] = {"rc": refused.returncode, "out": refused.stdout, "err": refused.stderr}


def others_may_enter(d: Path) -> bool:
    return bool(d.stat().st_mode & 0o001)


def shadow(path: Path) -> None:
    """Let every account reach ``path`` in this namespace only: a folder on
    the way that others may not enter (root's home holding pyenv's Python,
    a 0700 temporary folder holding the checkout) is covered by a 0755
    tmpfs into which only the one entry on the way is bound back."""
    for d in [*reversed(path.parents), path]:
        if d == Path("/") or others_may_enter(d) or d == path:
            continue
        child = path.relative_to(d).parts[0]
        keep = work / f"keep-{len(list(work.iterdir()))}"
        keep.mkdir()
        subprocess.run(["mount", "--bind", str(d / child), str(keep)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(d)], check=True)
        (d / child).mkdir()
        subprocess.run(["mount", "--move", str(keep), str(d / child)], check=True)


if refused.returncode == 3:  # the box's Python or checkout out of the service account's reach
    shadow(Path(os.path.realpath(sys.executable)))
    shadow(Path.cwd())
first = subprocess.run(cli, capture_output=True, text=True, timeout=300)
doc["init1"] = {"rc": first.returncode, "out": first.stdout, "err": first.stderr}
svc = pwd.getpwnam("postedge")
doc["groups"] = [g.gr_name for g in grp.getgrall() if "postedge" in g.gr_mem]
st = os.stat("/var/lib/postedge")
doc["state_dir"] = [st.st_uid == svc.pw_uid, oct(st.st_mode & 0o777)]
wants = Path("/etc/systemd/system/multi-user.target.wants")
doc["wants"] = sorted(p.name for p in wants.iterdir()) if wants.is_dir() else []
doc["listing"] = subprocess.run(["ls", "-la", str(out), str(out / "pki")], capture_output=True,
                                text=True).stdout
doc["units"] = sorted(p.name for p in Path("/etc/systemd/system").glob("postedge-*.service"))

# Start each part with exactly the command init printed.
cmds = {}
for line in first.stdout.splitlines():
    for part in ("broker", "gateway"):
        if line.startswith(f"  {part}: "):
            cmds[part] = line.split(": ", 1)[1]
doc["commands"] = cmds
procs = [subprocess.Popen(["sh", "-c", cmds[p]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True) for p in ("broker", "gateway") if p in cmds]
try:
    deadline, served = time.monotonic() + 60, None
    ctx = ssl.create_default_context(cafile=str(out / "pki" / "ca.pem"))
    while time.monotonic() < deadline and served is None:
        try:
            with socket.create_connection(("127.0.0.1", web_port), timeout=2) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                served = s.recv(200).decode(errors="replace").split("\r\n", 1)[0]
        except OSError:
            time.sleep(0.3)
    doc["served"] = served
    doc["ps"] = subprocess.run(["ps", "-ww", "-eo", "user:20,args"], capture_output=True, text=True).stdout
    second = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    doc["init2"] = {"rc": second.returncode, "out": second.stdout, "err": second.stderr}
finally:
    for p in procs:
        try:
            os.killpg(p.pid, 15)
        except ProcessLookupError:
            pass
    doc["logs"] = []
    for p in procs:
        try:
            doc["logs"].append(p.communicate(timeout=20)[0][-3000:])
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            doc["logs"].append("(killed)")
    result.write_text(json.dumps(doc, indent=1))
