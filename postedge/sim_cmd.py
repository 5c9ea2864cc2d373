"""``postedge sim``: run an outlet from a scenario file and judge it.

``run`` prints a progress line while it goes, then the summary with the
ledger's verdict; ``--json``/``--html`` write the full result and report;
``--dashboard`` serves the live page during the run and, after it, the
run's last picture with its verdict until Ctrl-C. A scenario with
``[fleet]`` (or ``--outlets N``) runs a county instead: many outlets
against one central service, then the dispatcher's view (``--html``: the
county's report; ``--dashboard``: the live page on the whole county). Exit
status 0 when every expectation held, 1 when one failed, 2 for a bad
scenario file or usage, 3 when the environment is wrong (the dashboard's
port is taken): checked before the run starts, so a run never ends in a
traceback for it.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import describe
from postedge import helptext, i18n
from postedge.i18n import t

if TYPE_CHECKING:
    from simulator.scan_engine_sim import SimScanEngine

DEFAULT = Path(__file__).resolve().parent.parent / "scenarios" / "village-day.toml"


def missing_scaleout() -> list[str]:
    """The Debian programs the scale-out backend's local cluster needs and this box lacks."""
    import glob
    import shutil

    missing = [] if shutil.which("nats-server") or Path("/usr/sbin/nats-server").exists() else ["nats-server"]
    if not (glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb")):
        missing.append("postgresql")
    return missing


def central_refused(backend: str, sc: Any, lang: str) -> int:
    """Why the run cannot have the platform ``backend`` asked for, said, as
    the exit code (0: it can): on scale-out, its programs installed (3, the
    machine) and no fault that needs the embedded store (2, the scenario)."""
    if backend != "scaleout":
        return 0
    missing = missing_scaleout()
    if missing:
        print(t("error", lang, msg=t("sim.no_scaleout", lang, what=", ".join(missing))), file=sys.stderr)
        return 3
    lossy = [f.kind for f in sc.faults if f.kind == "central_lossy"]
    if lossy:
        print(t("error", lang, msg=t("sim.scaleout_fault", lang, kind=lossy[0])), file=sys.stderr)
        return 2
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from simulator import report
    from simulator.runner import run_scenario
    from simulator.scenario import ScenarioError, load

    lang = i18n.pick(args.lang)
    try:
        sc = load(args.scenario)
    except ScenarioError as e:
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        return 2
    for w in sc.warnings():
        print(t("warning", lang, msg=f"{args.scenario}: {w.text(lang)}"), file=sys.stderr)
    if args.seed is not None:
        from dataclasses import replace

        sc = replace(sc, seed=args.seed)
    refused = central_refused(args.central, sc, lang)
    if refused:
        return refused
    if args.outlets is not None or sc.fleet_outlets:
        return run_county(args, sc, lang)
    if not dashboard_port_free(args.dashboard, lang):
        return 3
    if args.broker == "mosquitto":
        from gateway.broker import find_mosquitto

        try:
            find_mosquitto()
        except FileNotFoundError:  # asked for by name and missing: the machine, not the run
            print(t("error", lang, msg=t("sim.no_mosquitto", lang)), file=sys.stderr)
            return 3
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="postedge-sim-"))
    bar = report.ProgressBar(sc.duration_s, lang=lang)
    dash = None

    def on_start(outlet: object) -> None:
        nonlocal dash
        if args.dashboard is not None:
            from simulator.dashboard import Dashboard

            dash = Dashboard(outlet.snapshot, port=args.dashboard, lang=lang)  # type: ignore[attr-defined]
            dash.start()
            print(t("sim.dashboard", lang, url=dash.url), file=sys.stderr, flush=True)

    def progress(outlet: object) -> None:
        snap = outlet.snapshot()  # type: ignore[attr-defined]
        bar.update(snap["t_virtual"], events=snap["ledger"].get("device", 0),
                   faults_active=sum(1 for f in snap["faults"] if f["active"]))

    def on_end(outlet: object) -> None:
        if dash is not None:
            dash.freeze()

    try:
        result = run_scenario(sc, work, progress=progress, on_start=on_start, broker=args.broker,
                              on_end=on_end, central_backend=args.central)
        bar.close(complete=True)  # the run reached its end: 100 %, whatever the last update said
    except ValueError as e:  # a work folder that is not ours
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        if dash is not None:
            dash.stop()
        return 2
    except BaseException:
        if dash is not None:
            dash.stop()
        raise
    finally:
        bar.close()
    if args.json:
        report.write_json(result, Path(args.json))
    if args.html:
        report.write_html(result, Path(args.html), lang)
    report.print_summary(result, lang, sys.stdout)
    reports = [p for p in (args.json, args.html) if p]
    if reports:
        print(t("sim.written", lang, paths=", ".join(reports)))
    rc = 0 if result["verdict"]["ok"] else 1
    if dash is not None:
        linger(dash, result["verdict"]["ok"], [str(Path(p).resolve()) for p in reports], lang)
    return rc


def dashboard_port_free(port: int | None, lang: str) -> bool:
    """Whether the dashboard can listen where asked (a port of None: no
    dashboard); says why not on stderr."""
    if not port:
        return True
    err = port_taken(port)
    if err is None:
        return True
    msg = (t("sim.port_in_use", lang, port=port) if err.errno == errno.EADDRINUSE
           else t("sim.port_taken", lang, port=port, why=err.strerror or str(err)))
    print(t("error", lang, msg=msg), file=sys.stderr)
    return False


def run_county(args: argparse.Namespace, sc: Any, lang: str) -> int:
    """A county (``[fleet]``, or ``--outlets``): every outlet against one
    central service (``simulator/fleet.py``), the dispatcher's view after it.
    ``--html`` writes the county's report (``report.write_fleet_html``);
    ``--dashboard`` serves the single outlet's page on the whole county
    (``fleet.county_snapshot``: every device under its outlet's name), and
    its last picture after the run until Ctrl-C, as for one outlet."""
    from simulator import report
    from simulator.fleet import county_snapshot, run_fleet

    outlets = args.outlets if args.outlets is not None else sc.fleet_outlets
    problem = None
    if outlets < 1:
        problem = t("sim.fleet_outlets", lang, n=outlets)
    elif any(n > outlets for n, _ in sc.fleet_faults):
        problem = t("sim.fleet_fault_outlet", lang, outlet=max(n for n, _ in sc.fleet_faults), n=outlets)
    if problem is not None:
        print(t("error", lang, msg=problem), file=sys.stderr)
        return 2
    if not dashboard_port_free(args.dashboard, lang):
        return 3
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="postedge-county-"))
    bar = report.ProgressBar(sc.duration_s, lang=lang)
    dash = None

    def on_start(fleet: list[Any]) -> None:
        nonlocal dash
        if args.dashboard is not None:
            from simulator.dashboard import Dashboard

            dash = Dashboard(lambda: county_snapshot(fleet), port=args.dashboard, lang=lang)
            dash.start()
            print(t("sim.dashboard", lang, url=dash.url), file=sys.stderr, flush=True)

    def on_end(fleet: list[Any]) -> None:
        if dash is not None:
            dash.freeze()

    try:
        result = run_fleet(sc, outlets, work, broker=args.broker, progress=lambda share, events, active:
                           bar.update(share * sc.duration_s, events=events, faults_active=active),
                           on_start=on_start, on_end=on_end, central_backend=args.central)
        bar.close(complete=True)
    except ValueError as e:  # a work folder that is not ours
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        if dash is not None:
            dash.stop()
        return 2
    except BaseException:
        if dash is not None:
            dash.stop()
        raise
    finally:
        bar.close()
    if args.json:
        report.write_json(result, Path(args.json))
    if args.html:
        report.write_fleet_html(result, Path(args.html), lang)
    report.print_fleet_summary(result, lang, sys.stdout)
    reports = [p for p in (args.json, args.html) if p]
    if reports:
        print(t("sim.written", lang, paths=", ".join(reports)))
    if dash is not None:
        linger(dash, result["verdict"]["ok"], [str(Path(p).resolve()) for p in reports], lang)
    return 0 if result["verdict"]["ok"] else 1


def linger(dash: object, ok: bool, reports: list[str], lang: str) -> None:
    """Keep serving the run's last picture, with its verdict, until Ctrl-C
    or SIGTERM: the tester who opened the page sees how the run ended."""
    import signal
    import threading

    dash.finish(ok, reports)  # type: ignore[attr-defined]
    print(t("sim.dashboard_linger", lang, url=dash.url), flush=True)  # type: ignore[attr-defined]
    stop = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        dash.stop()  # type: ignore[attr-defined]


def port_taken(port: int) -> OSError | None:
    """Why the dashboard could not listen on ``port`` (None when it can)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return e
    return None


def tcp_port(text: str) -> int:
    """An argparse type: a TCP port number, 0 meaning any free one."""
    lang = helptext.parse_lang()
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(t("sim.not_port", lang, text=repr(text))) from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(t("sim.port_range", lang, n=n))
    return n


def cmd_check(args: argparse.Namespace) -> int:
    """Validate scenario files without running them."""
    from simulator.scenario import ScenarioError, load

    lang = i18n.pick(args.lang)
    rc = 0
    for path in args.scenarios:
        try:
            sc = load(path)
        except ScenarioError as e:
            rc = 2
            if args.json:
                print(json.dumps({"file": path, "ok": False, "error": describe(e, lang)}, ensure_ascii=False))
            else:
                print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
            continue
        warnings = [f"{path}: {w.text(lang)}" for w in sc.warnings()]
        if args.json:
            print(json.dumps({"file": path, "name": sc.name, "ok": True, "warnings": warnings},
                             ensure_ascii=False))
            continue
        if sc.fleet_outlets:
            print(t("sim.check_ok_county", lang, path=path, name=sc.name, hours=sc.hours,
                    faults=len(sc.faults), outlets=sc.fleet_outlets, own=len(sc.fleet_faults)))
        else:
            print(t("sim.check_ok", lang, path=path, name=sc.name, hours=sc.hours, faults=len(sc.faults)))
        for w in warnings:
            print(t("warning", lang, msg=w), file=sys.stderr)
    return rc


def cmd_new(args: argparse.Namespace) -> int:
    """Write ``NAME.toml`` from the commented template (every key, its
    default and what it does, in both languages); never over a file."""
    from protocol.topics import valid_segment
    from simulator.scenario import TEMPLATE

    lang = i18n.pick(args.lang)
    if not valid_segment(args.name):
        print(t("error", lang, msg=t("sim.new_bad_name", lang, name=args.name)), file=sys.stderr)
        return 2
    path = Path(args.out) / f"{args.name}.toml"
    template = TEMPLATE.read_text(encoding="utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as f:
            f.write(template.replace('name = "NAME"', f'name = "{args.name}"', 1))
    except FileExistsError:
        print(t("error", lang, msg=t("sim.new_exists", lang, path=path)), file=sys.stderr)
        return 2
    except OSError as e:
        print(t("error", lang, msg=f"{path}: {e.strerror or e}"), file=sys.stderr)
        return 3
    print(t("sim.new_written", lang, path=path))
    return 0


def cmd_serve_board(args: argparse.Namespace) -> int:
    from simulator.bench import Bench

    lang = i18n.pick(args.lang)
    try:
        bench = Bench(args.driver, args.boards, args.locks, args.pty, args.auto_close)
    except (ValueError, OSError) as e:
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        return 2
    print(t("bench.board", lang, url=bench.board_url, driver=args.driver, n=len(bench.boards),
            locks=args.locks), flush=True)
    print(t("bench.panel", lang, url=bench.panel.url), flush=True)
    print(t("bench.paste", lang, board=bench.board_url, driver=args.driver, panel=bench.panel.url),
          flush=True)
    print(t("bench.help", lang), flush=True)

    def say(d: dict[str, str]) -> None:
        print(t("bench.display", lang, text=d["zh"] if lang == "zh" else d["en"], code=d["code"],
                detail=d["detail"]), flush=True)

    bench.watch(say)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            what, value = bench.command(line)
            if what == "quit":
                break
            if what == "doors":
                doors = " ".join(f"{b}/{ch}" for b, ch in value) or "-"
                print(t("bench.doors", lang, doors=doors), flush=True)
            elif what == "closed":
                print(t("bench.closed", lang, board=value[0], lock=value[1]), flush=True)
            elif what in ("no_locker", "unknown"):
                print(t(f"bench.{what}", lang, line=line.strip()), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        bench.close()
    return 0


def engine_command(engine: SimScanEngine, line: str) -> tuple[str, Any]:
    """One typed line at ``serve-engine`` -> (what, value): ``scan TEXT
    [SYMBOLOGY]`` puts a label under the engine (read at the next trigger, or
    at once in continuous mode); ``fault noise N|truncate|bad_checksum|
    oversize N|unplug`` spoils the next scan; ``stats``; ``quit``."""
    from simulator.scan_engine_sim import AIM_IDS

    word, _, rest = line.strip().partition(" ")
    parts = rest.split()
    if word == "scan" and parts:
        named = len(parts) > 1 and parts[-1] in AIM_IDS  # a symbology after the text
        sym = parts[-1] if named else "code128"
        text = rest.rsplit(" ", 1)[0].strip() if named else rest.strip()
        engine.present(text, sym)
        return "presented", (text, sym)
    if word == "fault" and parts:
        kind, arg = parts[0], parts[1] if len(parts) > 1 else ""
        if kind in ("noise", "oversize") and arg.isdigit() and 0 < int(arg) <= 65536:
            engine.faults.set(scans=1, **{kind: int(arg)})
            return "fault", kind
        if kind in ("truncate", "bad_checksum", "unplug") and not arg:
            engine.faults.set(scans=1, **{kind: True})
            return "fault", kind
    if word == "stats" and not parts:
        return "stats", {"triggers": engine.triggers, "scans": len(engine.emitted),
                         "bad_commands": engine.bad_commands}
    if word in ("quit", "exit"):
        return "quit", None
    return "unknown", line.strip()


def cmd_serve_engine(args: argparse.Namespace) -> int:
    from simulator.scan_engine_sim import SimScanEngine

    lang = i18n.pick(args.lang)
    engine = SimScanEngine(args.family, suffix=args.suffix, aim=args.aim, continuous=args.continuous)
    try:
        url = engine.serve_pty() if args.pty else f"socket://127.0.0.1:{engine.serve_tcp()}"
    except OSError as e:
        print(t("error", lang, msg=describe(e, lang)), file=sys.stderr)
        engine.close()
        return 3
    mode = "continuous" if args.continuous else "trigger"
    print(t("engine.serving", lang, family=args.family, url=url), flush=True)
    print(t("engine.paste", lang, family=args.family, url=url, suffix=args.suffix, mode=mode), flush=True)
    print(t("engine.help", lang), flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            what, value = engine_command(engine, line)
            if what == "quit":
                break
            if what == "presented":
                print(t("engine.presented", lang, text=value[0], symbology=value[1]), flush=True)
            elif what == "fault":
                print(t("engine.fault", lang, fault=value), flush=True)
            elif what == "stats":
                print(t("engine.stats", lang, **value), flush=True)
            else:
                print(t("bench.unknown", lang, line=value), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("sim", help="simulate an outlet from a scenario file and check the delivery ledger")
    ssub = s.add_subparsers(dest="sim", required=True)
    r = ssub.add_parser("run", help="run a scenario; exit 1 if an expectation fails")
    r.add_argument("scenario", nargs="?", default=str(DEFAULT), help="scenario TOML (default: village-day)")
    r.add_argument("--seed", type=int, help="override the scenario's seed")
    r.add_argument("--json", help="write the full result as JSON here")
    r.add_argument("--html", help="write the HTML report here")
    r.add_argument("--dashboard", type=tcp_port, nargs="?", const=0, default=None, metavar="PORT",
                   help="serve the live dashboard during the run (port 0: any free port), "
                        "and the result after it until Ctrl-C")
    r.add_argument("--workdir", help="keep the run's files here (default: a temporary folder)")
    r.add_argument("--broker", choices=("auto", "mosquitto", "amqtt"), default="auto",
                   help="the outlet broker: Mosquitto when installed (auto), or the embedded amqtt")
    r.add_argument("--outlets", type=int, metavar="N",
                   help="run the scenario as a county of N outlets against one central service "
                        "(instead of its [fleet] outlets)")
    r.add_argument("--central", choices=("embedded", "scaleout"), default="embedded",
                   help="the central service's backend: embedded (SQLite), or scaleout (a 3-node NATS "
                        "JetStream cluster, an ingest worker and PostgreSQL, started on loopback)")
    r.set_defaults(func=cmd_run)
    r.epilog_fields = {"scenarios": "\n".join(  # type: ignore[attr-defined]
        f"  {p.stem}" for p in sorted(DEFAULT.parent.glob("*.toml")))}
    n = ssub.add_parser("new", help="write a new scenario file with every key explained")
    n.add_argument("name", help="the scenario's name (also the file's: NAME.toml)")
    n.add_argument("--out", type=Path, default=Path("."), help="folder to write it in")
    n.set_defaults(func=cmd_new)
    b = ssub.add_parser("serve-board", help="a simulated lock board and front panel for a locker run "
                        "from its generated config; type keys/scan/close/doors/quit")
    b.add_argument("--driver", choices=("8a", "kerong"), default="8a")
    b.add_argument("--boards", type=int, default=1, help="boards on the bus")
    b.add_argument("--locks", type=int, default=24, help="locks per board")
    b.add_argument("--pty", action="store_true", help="the bus on a pty (a serial device path), not TCP")
    b.add_argument("--auto-close", type=float, default=None, metavar="SECONDS",
                   help="a person shuts every opened door after this long")
    b.set_defaults(func=cmd_serve_board)

    e = ssub.add_parser("serve-engine", help="a simulated serial scan engine for a counter scanner run from "
                        "its generated config; type scan/fault/stats/quit")
    e.add_argument("--family", choices=("gm65", "honeywell", "ssi", "newland"), default="gm65")
    e.add_argument("--suffix", choices=("cr", "crlf", "none"), default="cr", help="what ends each scan")
    e.add_argument("--aim", action="store_true", help="prefix each scan with its AIM symbology identifier")
    e.add_argument("--continuous", action="store_true",
                   help="send a label as soon as it is presented (default: at the next trigger)")
    e.add_argument("--pty", action="store_true", help="on a pty (a serial device path), not TCP")
    e.set_defaults(func=cmd_serve_engine)

    c = ssub.add_parser("check", help="validate scenario files")
    c.add_argument("scenarios", nargs="+")
    c.add_argument("--json", action="store_true", help="one JSON object per file on stdout, errors included")
    c.set_defaults(func=cmd_check)
