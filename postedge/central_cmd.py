"""``postedge central ...``: run and administer the central service.

``init DIR`` makes a central service folder (``central/config.py``): a new
platform master key, a CA and server certificate for the HTTPS front, the
embedded database (or, with ``--scaleout FILE``, the scale-out backend's
cluster and database, ``central/scaleout/folder.py``); run again, it
changes nothing. ``run DIR`` serves the front until SIGTERM or Ctrl+C, with
the master key from the folder on either backend. ``outlet add|retire|list``
is the outlet registry a gateway's login is checked against; ``device
add|retire|list|rotate`` the device registry (``central/registry.py``): ``add``
registers a device and prints the key section for its config (its own key
only: the master never leaves this folder), ``retire`` stops its key being
issued and permits being signed for it, ``rotate`` moves it to a new key
version (``central/keys.py`` ``rotate``). Registry commands, ``sign``,
``courier``, ``docs``, ``point``, ``manifest`` and ``tokens`` work on both
backends (a scale-out folder keeps the documents' key beside its master
key); the rest keep their data beside
the embedded backend's and say so on a scale-out folder. ``run`` runs the
platform's duties on either (``central/duties.py``: on scale-out the
answers to revoked devices and clerks' requests, the postage audit, and
pickup notices with an SMS provider; ``contacts`` imports their numbers on
either). ``sign`` signs a
command with the device's key and queues it for the outlet's gateway to
pull. ``campaign``, ``site``, ``job`` and ``review`` are 政讯通 (``central/boards.py``): campaigns, the
site registry, jobs signed for a handheld, and the verdicts on evidence
photos with their reason codes. ``docs key|list|publish`` are the counters'
signed box catalogue and tariff (``central/documents.py``); ``point`` and
``manifest`` the village points with their agents' codes and a courier's
round manifest (``central/manifests.py``), ``tokens`` where each delivery
code's text to its villager is (``central/notices.py``). ``nats-auth``
writes the outlets' NATS users for nats-server's MQTT listener on the
scale-out backend from the registry (``central/scaleout/nats_auth.py``).

Exit codes: 0 done, 2 a usage or configuration error, 3 the environment
(a port in use).
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central.messages import TEXT
from common.config import describe
from postedge import i18n

if TYPE_CHECKING:
    from central.config import CentralConfig
    from central.embedded import Embedded
    from central.keys import KeyService


def _say(key: str, lang: str, err: bool = False, **kw: object) -> None:
    print(TEXT.t(key, lang, **kw), file=sys.stderr if err else sys.stdout)


def _config(args: argparse.Namespace, lang: str) -> CentralConfig | None:
    """The folder's ``central.toml``; None with the reason printed."""
    from central.config import FILE, load
    from common.config import ConfigError

    folder = Path(args.dir)
    if not (folder / FILE).is_file():
        _say("error.not_initialised", lang, err=True, dir=folder)
        return None
    try:
        return load(folder)
    except ConfigError as e:
        _say("error.config", lang, err=True, detail=describe(e, lang))
        return None


def _open(args: argparse.Namespace, lang: str):  # noqa: ANN202 - lazily imported
    """(config, backend) of the folder: the embedded backend, or on a
    scale-out folder its PostgreSQL store (the registry, commands and the
    duty store, which is all a command needs); None with the reason printed."""
    from central.embedded import Embedded

    cfg = _config(args, lang)
    if cfg is None:
        return None
    folder = Path(args.dir)
    if cfg.backend == "embedded":
        return cfg, Embedded(cfg.path(folder, cfg.data_dir))
    import psycopg

    from central.scaleout.folder import open_store

    try:
        return cfg, open_store(folder, cfg)
    except ValueError as e:
        _say("error.config", lang, err=True, detail=e)
    except psycopg.Error as e:  # the database is not there, or refuses the login
        _say("error.store", lang, err=True, detail=str(e).strip()[:300])
    return None


@contextmanager
def _opened(args: argparse.Namespace, lang: str) -> Iterator[tuple[CentralConfig, Embedded] | None]:
    """The folder's (config, backend), closed on the way out; None when it
    cannot be opened (the reason is already printed). Every command needs
    only the registry, commands and the duty store (``central/duty_store.py``),
    which a scale-out folder has too (its backend is typed as the embedded
    one only loosely)."""
    opened = _open(args, lang)
    try:
        yield opened
    finally:
        if opened is not None:
            opened[1].close()


def cmd_init(args: argparse.Namespace) -> int:
    from central.config import FILE, write_default
    from central.embedded import Embedded
    from central.keys import new_master
    from common.pki import make_outlet_pki

    lang = i18n.pick(args.lang)
    folder = Path(args.dir)
    if (folder / FILE).is_file():
        _say("init.kept", lang, dir=folder)
        return 0
    scale = None
    if args.scaleout is not None:
        from central.scaleout.config import ScaleOutConfig

        try:
            scale = ScaleOutConfig.from_json(args.scaleout.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError) as e:
            _say("error.config", lang, err=True, detail=f"{args.scaleout}: {e}")
            return 2
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    new_master(folder / "master.key")
    make_outlet_pki(folder / "pki", "central", ("localhost", "127.0.0.1", *args.name))
    if scale is None:
        write_default(folder, args.host, args.port)
        Embedded(folder / "data").close()
    else:
        import psycopg

        from central.scaleout.backend import PgStore
        from central.scaleout.folder import write_config

        write_config(folder, scale)
        try:
            PgStore(scale, pool_size=1).close()  # the tables, and proof the database is there
        except psycopg.Error as e:
            _say("error.store", lang, err=True, detail=str(e).strip()[:300])
            return 2
        write_default(folder, args.host, args.port, backend="scaleout")  # last: the folder is whole
    _say("init.made", lang, dir=folder, ca=folder / "pki" / "ca.pem")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from central import front
    from central.duties import run_configured

    lang = i18n.pick(args.lang)
    opened = _run_backend(args, lang)
    if opened is None:
        return 2
    cfg, backend, master = opened
    folder = Path(args.dir)
    try:
        srv, _ = front.serve(backend, cfg.host, cfg.port, str(cfg.path(folder, cfg.cert_file)),
                             str(cfg.path(folder, cfg.key_file)), master=master)
    except OSError as e:
        _say("error.port", lang, err=True, host=cfg.host, port=cfg.port, detail=e.strerror or e)
        backend.close()
        return 3
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=run_configured, args=(cfg, folder, backend, master, stop), name="duties",
                     daemon=True).start()
    _say("run.listening", lang, host=cfg.host, port=srv.address[1])
    sys.stdout.flush()
    stop.wait()
    srv.stop()
    backend.close()
    _say("run.stopped", lang)
    return 0


def _run_backend(args: argparse.Namespace, lang: str) -> tuple[CentralConfig, Any, bytes] | None:
    """What ``run`` serves: (config, backend, master key), the master key
    read from the folder on either backend; None with the reason printed.
    On a scale-out folder the backend is the whole of it, log and store."""
    from central.keys import load_master

    cfg = _config(args, lang)
    if cfg is None:
        return None
    folder = Path(args.dir)
    try:
        master = load_master(cfg.path(folder, cfg.master_key_file))
    except (OSError, ValueError) as e:
        _say("error.master", lang, err=True, detail=e)
        return None
    if cfg.backend == "embedded":
        from central.embedded import Embedded

        return cfg, Embedded(cfg.path(folder, cfg.data_dir)), master
    import nats
    import psycopg

    from central.scaleout.folder import open_scaleout

    try:
        return cfg, open_scaleout(folder, cfg), master
    except ValueError as e:
        _say("error.config", lang, err=True, detail=e)
    except (psycopg.Error, nats.errors.Error, OSError, TimeoutError) as e:
        _say("error.store", lang, err=True, detail=str(e).strip()[:300] or type(e).__name__)
    return None


def cmd_outlet(args: argparse.Namespace) -> int:
    from protocol.topics import valid_segment

    lang = i18n.pick(args.lang)
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        if args.action == "list":
            for row in backend.health():
                at = row["last_batch_at"]
                last = (TEXT.t("outlet.never", lang) if at is None
                        else time.strftime("%Y-%m-%d %H:%M", time.localtime(at)))
                state = TEXT.t("outlet.retired_state" if row["retired"] else "outlet.active", lang)
                print(TEXT.t("outlet.row", lang, outlet=row["outlet"], events=row["events"], state=state,
                             last=last))
            return 0
        if not valid_segment(args.outlet):
            _say("error.name", lang, err=True, name=args.outlet)
            return 2
        if args.action == "add":
            from central.documents import resend

            password = secrets.token_urlsafe(24)
            known = any(o["outlet"] == args.outlet for o in backend.outlets())
            backend.add_outlet(args.outlet, password, notifier=args.notifier)
            _say("outlet.added", lang, outlet=args.outlet, password=password)
            if not known:  # a new outlet's counter gets the documents published before it
                n = resend(backend, args.outlet)
                if n:
                    _say("outlet.docs_queued", lang, outlet=args.outlet, n=n)
            if args.notifier:
                key = _keys(args, cfg).notifier_key()
                _say("outlet.notifier_key", lang, err=True, outlet=args.outlet)
                print(f'[keys]\n"1" = "{key.hex()}"')
            return 0
        if backend.retire_outlet(args.outlet):
            _say("outlet.retired", lang, outlet=args.outlet)
            return 0
        _say("outlet.unknown", lang, err=True, outlet=args.outlet)
        return 2


def cmd_contacts(args: argparse.Namespace) -> int:
    """Import villagers' numbers for parcels (CSV: parcel, phone[, lang]),
    as the parcel system hands them over; bad rows are named and skipped."""
    import csv

    from central.notices import add_contact
    from protocol.barcodes import classify

    lang = i18n.pick(args.lang)
    good = bad = 0
    with _opened(args, lang) as opened:  # a scale-out store keeps contacts too
        if opened is None:
            return 2
        try:
            with open(args.file, newline="", encoding="utf-8") as f:
                for i, row in enumerate(csv.reader(f), 1):
                    parcel, phone = (row + ["", ""])[:2]
                    plang = row[2] if len(row) > 2 and row[2] in ("zh", "en") else "zh"
                    if not classify(parcel.strip()).get("ok") or not phone.strip().lstrip("+").isdigit():
                        _say("contacts.bad_row", lang, err=True, line=i)
                        bad += 1
                        continue
                    add_contact(opened[1], args.outlet, parcel.strip(), phone.strip(), plang)
                    good += 1
        except OSError as e:
            _say("contacts.unreadable", lang, err=True, file=args.file, detail=e.strerror or e)
            return 2
    _say("contacts.done", lang, good=good, bad=bad, outlet=args.outlet)
    return 1 if bad else 0


def cmd_dispatcher(args: argparse.Namespace) -> int:
    from common.session import BadCredential, check_name, check_password_shape

    lang = i18n.pick(args.lang)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(
        TEXT.t("dispatcher.prompt", lang))
    try:
        check_name(args.name)
        check_password_shape(password)
    except BadCredential as e:
        _say("dispatcher.bad", lang, err=True, detail=e)
        return 2
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        opened[1].add_dispatcher(args.name, password)
    _say("dispatcher.added", lang, name=args.name)
    return 0


def _master(args: argparse.Namespace, cfg: CentralConfig) -> bytes:
    from central.keys import load_master

    return load_master(cfg.path(Path(args.dir), cfg.master_key_file))


def _keys(args: argparse.Namespace, cfg: CentralConfig, backend: Embedded | None = None) -> KeyService:
    """The outlet's keys; with the registry (``backend``), at each device's own
    key version, so a rotated device is signed for with its new key."""
    from central.keys import KeyService

    if backend is not None:
        return KeyService.registered(backend, args.outlet, _master(args, cfg))
    return KeyService(args.outlet, _master(args, cfg))


def cmd_device(args: argparse.Namespace) -> int:
    from protocol.topics import valid_segment

    lang = i18n.pick(args.lang)
    for name in (args.outlet, getattr(args, "device", args.outlet)):
        if not valid_segment(name):
            _say("error.name", lang, err=True, name=name)
            return 2
    from central import keys

    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        if args.action == "list":
            for row in backend.devices(args.outlet):
                state = TEXT.t("outlet.retired_state" if row["retired"] else "outlet.active", lang)
                print(TEXT.t("device.row", lang, device=row["device"], kind=row["kind"], kv=row["kv"],
                             state=state))
            return 0
        if args.action == "retire":
            if backend.retire_device(args.outlet, args.device):
                _say("device.retired", lang, device=args.device, outlet=args.outlet)
                return 0
            _say("device.unknown", lang, err=True, device=args.device, outlet=args.outlet)
            return 2
        if args.action == "add":
            backend.add_device(args.outlet, args.device, args.kind)  # registered again: its key version kept
            row = next(d for d in backend.devices(args.outlet) if d["device"] == args.device)
            _say("device.added", lang, err=True, device=args.device, outlet=args.outlet)
            print(json.dumps({"key": keys.section(_master(args, cfg), args.outlet, row)}, indent=1))
            return 0
        if not 0 <= args.grace_days <= keys.GRACE_S // 86400:
            _say("device.grace_days", lang, err=True, most=keys.GRACE_S // 86400)
            return 2
        sec = keys.rotate(backend, _master(args, cfg), args.outlet, args.device, args.grace_days * 86400)
        if sec is None:
            _say("device.unknown", lang, err=True, device=args.device, outlet=args.outlet)
            return 2
        prev = sec.get("prev")
        if prev:
            _say("device.rotated", lang, err=True, device=args.device, outlet=args.outlet, kv=sec["kv"],
                 old=prev["kv"], until=time.strftime("%Y-%m-%d %H:%M", time.localtime(prev["until"])))
        else:
            _say("device.rotated_now", lang, err=True, device=args.device, outlet=args.outlet, kv=sec["kv"])
        _say("device.rotate_install", lang, err=True, outlet=args.outlet)
        print(json.dumps({"key": sec}, indent=1))
        return 0


def cmd_courier(args: argparse.Namespace) -> int:
    """Couriers' badges (``central/couriers.py``): ``add`` signs the
    credential for each of the outlet's registered lockers and queues it for
    the outlet's gateway (which relays it), printing the badge text once;
    ``list`` shows what was issued; ``revoke`` takes a badge and the
    courier's permits back at every locker."""
    from central.couriers import CourierRefused, Couriers
    from protocol.topics import valid_segment

    lang = i18n.pick(args.lang)
    names = (args.outlet,) if args.action == "list" else (args.outlet, args.courier)
    for name in names:
        if not valid_segment(name):
            _say("error.name", lang, err=True, name=name)
            return 2
    if args.action == "add" and not 1 <= args.days <= 366:
        _say("courier.days", lang, err=True)
        return 2
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        couriers = Couriers(backend, _master(args, cfg))
        if args.action == "list":
            for c in couriers.list(args.outlet):
                print(TEXT.t("courier.row", lang, courier=c["courier"],
                             state=TEXT.t("courier.state." + c["state"], lang),
                             until=time.strftime("%Y-%m-%d", time.localtime(c["exp"])) if c["exp"] else "-",
                             lockers=", ".join(c["lockers"])))
            return 0
        if args.action == "revoke":
            lockers, known = couriers.revoke(args.outlet, args.courier)
            if not lockers:
                _say("courier.no_lockers", lang, err=True, outlet=args.outlet)
                return 2
            if not known:
                _say("courier.not_on_record", lang, err=True, courier=args.courier, outlet=args.outlet)
            _say("courier.revoked", lang, courier=args.courier, outlet=args.outlet,
                 lockers=", ".join(lockers))
            return 0
        try:
            badge, cred, lockers = couriers.issue(args.outlet, args.courier, args.days)
        except CourierRefused:
            _say("courier.no_lockers", lang, err=True, outlet=args.outlet)
            return 2
    _say("courier.queued", lang, courier=args.courier, outlet=args.outlet, lockers=", ".join(lockers),
         until=time.strftime("%Y-%m-%d", time.localtime(cred["exp"])))
    print(badge)
    return 0


def cmd_nats_auth(args: argparse.Namespace) -> int:
    """The outlets' NATS users for nats-server's MQTT listener (the
    scale-out backend), from the registry: each active outlet with the
    bcrypt hash of its password that ``outlet add`` kept; a retired outlet
    is left out, so its MQTT login stops at the servers' next reload."""
    from central.scaleout import nats_auth

    lang = i18n.pick(args.lang)
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        _, backend = opened
        users = backend.mqtt_users()
    missing = sorted(o for o, h in users.items() if h is None)
    if missing:  # registered before the registry kept MQTT logins
        _say("nats_auth.no_hash", lang, err=True, outlets=", ".join(missing))
    outlets = {o: h for o, h in users.items() if h is not None}
    platform = sys.stdin.readline().rstrip("\n") if args.platform_password_stdin else None
    try:
        nats_auth.write(Path(args.out), args.prefix, outlets, platform)
    except (ValueError, OSError) as e:
        _say("nats_auth.bad", lang, err=True, detail=e)
        return 2
    _say("nats_auth.written", lang, n=len(outlets), path=args.out)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    lang = i18n.pick(args.lang)
    try:
        cmd_args = json.loads(args.args)
        if not isinstance(cmd_args, dict):
            raise ValueError("not an object")
    except ValueError as e:
        _say("error.args", lang, err=True, detail=e)
        return 2
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        cid = args.id or f"c-{secrets.token_hex(8)}"
        cmd = _keys(args, cfg, backend).command(args.device, args.op, cmd_args, cid, lifetime_s=args.lifetime)
        if args.print_only:
            print(json.dumps(cmd, ensure_ascii=False))
            return 0
        cursor = backend.push_command(args.outlet, args.kind, cmd)
        _say("sign.queued", lang, id=cid, op=args.op, device=args.device, outlet=args.outlet, cursor=cursor)
        return 0


def _when(text: str | None) -> float | None:
    """``YYYY-MM-DD`` (local midnight) as a timestamp; ValueError otherwise."""
    return None if not text else time.mktime(time.strptime(text, "%Y-%m-%d"))


def _read_json(path: str, lang: str) -> Any:
    """A JSON file the operator names; None (the reason already printed) when it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _say("docs.bad_file", lang, err=True, file=path, detail=str(e)[:200])
        return None
    if doc is None:
        _say("docs.bad_file", lang, err=True, file=path, detail="null")
    return doc


def cmd_docs(args: argparse.Namespace) -> int:
    """The counters' signed documents (``central/documents.py``)."""
    from central.documents import DocumentRefused, Documents

    lang = i18n.pick(args.lang)
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        # the embedded backend keeps the key in its data folder; a scale-out
        # folder beside its master key (the database never holds a private key)
        docs = Documents(backend, key_dir=None if cfg.backend == "embedded" else Path(args.dir))
        if args.action == "key":
            _say("docs.key", lang, err=True)
            keys = ", ".join(f'{k} = "{v}"' for k, v in docs.public_keys().items())
            print(f"[counter]\nplatform_keys = {{ {keys} }}")
            return 0
        if args.action == "list":
            rows = docs.latest()
            if not rows:
                _say("docs.none", lang)
            for d in rows:
                print(TEXT.t("docs.row", lang, kind=d["kind"], version=d["version"],
                             outlets=",".join(d["outlets"])))
            return 0
        body = _read_json(args.file, lang)
        if body is None:
            return 2
        if not isinstance(body, dict):
            _say("docs.bad_file", lang, err=True, file=args.file, detail="not a JSON object")
            return 2
        try:
            doc = docs.publish(args.kind, body, args.outlet or ["*"])
        except DocumentRefused as e:
            _say("docs.refused", lang, err=True, detail=str(e))
            return 2
        _say("docs.published", lang, kind=doc["kind"], version=doc["version"],
             outlets=",".join(doc["outlets"]))
        return 0


def cmd_rounds(args: argparse.Namespace) -> int:
    """Village points and couriers' round manifests (``central/manifests.py``)."""
    from central.keys import load_master
    from central.manifests import ManifestRefused, Manifests
    from central.notices import without_number

    lang = i18n.pick(args.lang)
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        rounds = Manifests(backend, load_master(cfg.path(Path(args.dir), cfg.master_key_file)))
        try:
            if args.what == "point":
                code = rounds.add_point(args.outlet, args.point, args.name, args.agent)
                _say("rounds.point_added", lang, outlet=args.outlet, point=args.point)
                if code is not None:
                    _say("rounds.agent_code", lang, err=True, agent=args.agent)
                    print(code)
                return 0
            parcels = _read_json(args.file, lang)
            if parcels is None:
                return 2
            _, tokens = rounds.issue(args.outlet, args.device, args.round, parcels)
        except ManifestRefused as e:
            _say("rounds.refused", lang, err=True, detail=str(e))
            return 2
        _say("rounds.issued", lang, device=args.device, round=args.round, n=len(parcels))
        if not tokens:
            return 0
        if not (cfg.sms_url and cfg.sms_token_file):
            _say("rounds.tokens", lang, err=True)  # no SMS provider: the operator passes them on
            for parcel, token in tokens.items():
                print(f"{parcel} {token}")
            return 0
        missing = without_number(backend, args.outlet, list(tokens))
        texted = len(tokens) - len(missing)
        if texted:
            _say("rounds.tokens_texted", lang, n=texted)
        if missing:  # reported, not skipped: texted once a contacts import brings the number
            _say("rounds.no_number", lang, err=True, n=len(missing))
            for parcel in missing:
                print(f"{parcel} {tokens[parcel]}")
        return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    """Where each delivery code's text to its villager is (``central/notices.py``
    ``token_states``), so a parcel still waiting for a number is seen."""
    from central.notices import token_states

    lang = i18n.pick(args.lang)
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        for parcel, state in token_states(opened[1], args.outlet).items():
            print(TEXT.t("tokens.row", lang, parcel=parcel, state=TEXT.t("tokens.state." + state, lang)))
    return 0


def cmd_boards(args: argparse.Namespace) -> int:
    """campaign add|list, site add|approve|retire|list, job add|list, review list."""
    from central.boards import BoardError, Boards
    from central.keys import load_master

    lang = i18n.pick(args.lang)
    with _opened(args, lang) as opened:
        if opened is None:
            return 2
        cfg, backend = opened
        b = Boards(backend, load_master(cfg.path(Path(args.dir), cfg.master_key_file)))
        what, action = args.central, args.action
        try:
            if what == "campaign" and action == "add":
                b.add_campaign(args.id, args.poster, args.qr, _when(args.start), _when(args.end))
                _say("board.campaign_added", lang, id=args.id, qr=args.qr)
            elif what == "campaign":
                for c in b.campaigns():
                    print(TEXT.t("board.campaign_row", lang, id=c["id"], poster=c["poster"], qr=c["qr"]))
            elif what == "site" and action == "add":
                b.add_site(args.id, args.outlet, args.village, round(args.lat * 1e7), round(args.lon * 1e7),
                           name=args.name or "", tol_m=args.tolerance)
                _say("board.site_added", lang, id=args.id)
            elif what == "site" and action in ("approve", "retire"):
                (b.approve_site if action == "approve" else b.retire_site)(args.id)
                _say("board.site_" + action, lang, id=args.id)
            elif what == "site":
                b.run_once()
                for s in b.sites():
                    print(TEXT.t("board.site_row", lang, id=s["id"], village=s["village"],
                                 lat=s["lat_e7"] / 1e7, lon=s["lon_e7"] / 1e7,
                                 status=TEXT.t("board.state." + s["status"], lang),
                                 cond=TEXT.t("board.cond." + s["cond"], lang) if s["cond"] else ""))
            elif what == "job" and action == "add":
                jid = b.add_job(args.kind, args.outlet, args.device, args.site, args.campaign, args.village)
                cid, _cursor, n = b.send_jobs(args.outlet, args.device)
                _say("board.job_added", lang, id=jid, device=args.device, n=n, cmd=cid)
            elif what == "job":
                b.run_once()
                for j in b.jobs():
                    print(TEXT.t("board.job_row", lang, id=j["id"],
                                 kind=TEXT.t("board.kind." + j["kind"], lang), site=j["site"] or j["village"],
                                 device=j["device"],
                                 status=TEXT.t("board.jstate." + j["status"], lang),
                                 reason=TEXT.t("board.reason." + j["reason"], lang) if j["reason"] else ""))
            else:
                b.run_once()
                for r in b.reviews():
                    print(TEXT.t("board.review_row", lang, sha=r["sha"][:12], job=r["job"], step=r["step"],
                                 verdict=TEXT.t("board.verdict." + r["verdict"], lang),
                                 reason=TEXT.t("board.reason." + r["reason"], lang)))
                for rep in b.reports():
                    print(TEXT.t("board.report_row", lang, site=rep["site"],
                                 cond=TEXT.t("board.cond." + rep["cond"], lang), note=rep["note"]))
        except BoardError as e:
            _say("board.refused", lang, err=True, why=TEXT.t("board.reason." + e.code, lang), detail=e.detail)
            return 2
    return 0


def _boards_parser(csub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from central.boards import KINDS

    cp = csub.add_parser("campaign", help="bulletin-board campaigns: a poster and the QR printed on it")
    cpsub = cp.add_subparsers(dest="action", required=True)
    ca = cpsub.add_parser("add", help="add a campaign (or change it)")
    ca.add_argument("dir", type=Path)
    ca.add_argument("id")
    ca.add_argument("--poster", required=True, help="the poster's title")
    ca.add_argument("--qr", required=True, help="what the poster's QR code holds")
    ca.add_argument("--start", help="first day, YYYY-MM-DD")
    ca.add_argument("--end", help="last day, YYYY-MM-DD")
    cpsub.add_parser("list", help="list campaigns").add_argument("dir", type=Path)
    cp.set_defaults(func=cmd_boards)
    sp = csub.add_parser("site", help="the board site registry")
    spsub = sp.add_subparsers(dest="action", required=True)
    sa = spsub.add_parser("add", help="add an approved site")
    sa.add_argument("dir", type=Path)
    sa.add_argument("id")
    sa.add_argument("outlet")
    sa.add_argument("--village", required=True, help="the village")
    sa.add_argument("--name", help="what couriers call the place")
    sa.add_argument("--lat", type=float, required=True, help="latitude, degrees")
    sa.add_argument("--lon", type=float, required=True, help="longitude, degrees")
    sa.add_argument("--tolerance", type=float, default=50.0, help="metres a photo may be taken from the site")
    for action, text in (("approve", "approve a site a courier proposed"), ("retire", "retire a site")):
        a = spsub.add_parser(action, help=text)
        a.add_argument("dir", type=Path)
        a.add_argument("id")
    spsub.add_parser("list", help="sites, their status and condition").add_argument("dir", type=Path)
    sp.set_defaults(func=cmd_boards)
    jp = csub.add_parser("job", help="board jobs for a courier's handheld")
    jpsub = jp.add_subparsers(dest="action", required=True)
    ja = jpsub.add_parser("add", help="add a job and send the handheld its job list")
    ja.add_argument("dir", type=Path)
    ja.add_argument("outlet")
    ja.add_argument("device")
    ja.add_argument("--kind", choices=KINDS, required=True)
    ja.add_argument("--site", help="the site (not for a survey)")
    ja.add_argument("--campaign", help="the campaign whose poster goes up")
    ja.add_argument("--village", help="where to look for a site (a survey)")
    jpsub.add_parser("list", help="jobs and their status").add_argument("dir", type=Path)
    jp.set_defaults(func=cmd_boards)
    rp = csub.add_parser("review", help="verdicts on evidence photos and condition reports")
    rpsub = rp.add_subparsers(dest="action", required=True)
    rpsub.add_parser("list", help="list verdicts and reports").add_argument("dir", type=Path)
    rp.set_defaults(func=cmd_boards)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("central", help="the central service: the platform side gateways upload to")
    csub = c.add_subparsers(dest="central", required=True, metavar="COMMAND")
    i = csub.add_parser("init", help="make a central service folder (master key, certificates, database)")
    i.add_argument("dir", type=Path)
    i.add_argument("--host", default="0.0.0.0", help="address to listen on")
    i.add_argument("--port", type=int, default=8443)
    i.add_argument("--name", action="append", default=[], help="a host name gateways use (repeatable)")
    i.add_argument("--scaleout", type=Path, default=None,
                   help="the scale-out backend's configuration (JSON: NATS URLs, PostgreSQL, namespace)")
    i.set_defaults(func=cmd_init)
    r = csub.add_parser("run", help="serve the HTTPS front until stopped")
    r.add_argument("dir", type=Path)
    r.set_defaults(func=cmd_run)
    o = csub.add_parser("outlet", help="the outlet registry")
    osub = o.add_subparsers(dest="action", required=True)
    for action, text in (("add", "register an outlet and print its gateway's password once"),
                         ("retire", "retire an outlet: its gateway can no longer upload")):
        a = osub.add_parser(action, help=text)
        a.add_argument("dir", type=Path)
        a.add_argument("outlet")
        if action == "add":
            a.add_argument("--notifier", action="store_true",
                           help="the gateway has a local SMS modem: print the outlet notifier key for it")
    ol = osub.add_parser("list", help="outlets, their events and last upload")
    ol.add_argument("dir", type=Path)
    o.set_defaults(func=cmd_outlet)
    d = csub.add_parser("device", help="the device registry: register, retire, list")
    dsub = d.add_subparsers(dest="action", required=True)
    da = dsub.add_parser("add", help="register a device and print the key section for its config")
    da.add_argument("dir", type=Path)
    da.add_argument("outlet")
    da.add_argument("device")
    da.add_argument("--kind", choices=("locker", "scanner", "handheld"), required=True)
    dr = dsub.add_parser("retire", help="retire a device: no key is issued or permit signed for it again")
    dr.add_argument("dir", type=Path)
    dr.add_argument("outlet")
    dr.add_argument("device")
    dl = dsub.add_parser("list", help="an outlet's devices, their kind, key version and state")
    dl.add_argument("dir", type=Path)
    dl.add_argument("outlet")
    dro = dsub.add_parser("rotate", help="move a device to a new key and print its new key section")
    dro.add_argument("dir", type=Path)
    dro.add_argument("outlet")
    dro.add_argument("device")
    dro.add_argument("--grace-days", type=int, default=7,
                     help="days the old key still verifies what was signed with it (0: a key that got out)")
    d.set_defaults(func=cmd_device)
    ct = csub.add_parser("contacts", help="import villagers' numbers for parcels (CSV: parcel,phone[,lang])")
    ctsub = ct.add_subparsers(dest="action", required=True)
    cti = ctsub.add_parser("import", help="import a CSV file of parcel,phone[,lang]")
    cti.add_argument("dir", type=Path)
    cti.add_argument("outlet")
    cti.add_argument("file", type=Path)
    ct.set_defaults(func=cmd_contacts)
    dp = csub.add_parser("dispatcher", help="dispatcher logins for the review page (/dispatch)")
    dpsub = dp.add_subparsers(dest="action", required=True)
    dpa = dpsub.add_parser("add", help="add a dispatcher (or set a new password)")
    dpa.add_argument("dir", type=Path)
    dpa.add_argument("name")
    dpa.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    dp.set_defaults(func=cmd_dispatcher)
    cr = csub.add_parser("courier",
                         help="courier badges: the credential reaches the lockers through the gateway")
    crsub = cr.add_subparsers(dest="action", required=True)
    cra = crsub.add_parser("add",
                           help="issue a courier's badge for an outlet's lockers; prints the badge once")
    cra.add_argument("dir", type=Path)
    cra.add_argument("outlet")
    cra.add_argument("courier", help="the courier's id (1-32 of a-z 0-9 _ -)")
    cra.add_argument("--days", type=int, default=30, help="how long the badge opens the lockers")
    crl = crsub.add_parser("list", help="the couriers' badges of an outlet: valid until, revoked")
    crl.add_argument("dir", type=Path)
    crl.add_argument("outlet")
    crr = crsub.add_parser("revoke",
                           help="revoke a courier's badge and permits at every locker of the outlet")
    crr.add_argument("dir", type=Path)
    crr.add_argument("outlet")
    crr.add_argument("courier", help="the courier's id (1-32 of a-z 0-9 _ -)")
    cr.set_defaults(func=cmd_courier)
    na = csub.add_parser("nats-auth", help="write the outlets' NATS users for nats-server's MQTT listener")
    na.add_argument("dir", type=Path)
    na.add_argument("out", type=Path, help="the include file to write (nats-server: include \"auth.conf\")")
    na.add_argument("--prefix", default="pe-up/v1", help="the gateways' MQTT topic prefix")
    na.add_argument("--platform-password-stdin", action="store_true",
                    help="the platform user's password from stdin "
                         "(default: no_auth_user, for a loopback rig only)")
    na.set_defaults(func=cmd_nats_auth)
    s = csub.add_parser("sign", help="sign a command with the device's key and queue it for the outlet")
    s.add_argument("dir", type=Path)
    s.add_argument("outlet")
    s.add_argument("device")
    s.add_argument("op", help="the command, e.g. open, credential, config")
    s.add_argument("--args", default="{}", help="the command's arguments as a JSON object")
    s.add_argument("--kind", choices=("locker", "scanner", "handheld"), default="locker")
    s.add_argument("--id", help="command id (default: random)")
    s.add_argument("--lifetime", type=int, default=600, help="seconds the command stays valid")
    s.add_argument("--print-only", action="store_true", help="print the signed command, queue nothing")
    s.set_defaults(func=cmd_sign)
    dc = csub.add_parser("docs", help="the counters' signed box catalogue and tariff")
    dcsub = dc.add_subparsers(dest="action", required=True)
    dk = dcsub.add_parser("key", help="print the [counter] platform_keys line for a gateway's config")
    dk.add_argument("dir", type=Path)
    dk.set_defaults(func=cmd_docs)
    dl = dcsub.add_parser("list", help="the latest document of each kind")
    dl.add_argument("dir", type=Path)
    dl.set_defaults(func=cmd_docs)
    dpu = dcsub.add_parser("publish", help="sign a body as the next version and send it to the outlets")
    dpu.add_argument("dir", type=Path)
    dpu.add_argument("kind", choices=("box_catalogue", "tariff"))
    dpu.add_argument("file", help="the document's body as JSON")
    dpu.add_argument("--outlet", action="append", help="an outlet it is for (repeat; default: every outlet)")
    dpu.set_defaults(func=cmd_docs)
    vp = csub.add_parser("point", help="register a village point and, with --agent, its agent's code")
    vp.add_argument("dir", type=Path)
    vp.add_argument("outlet")
    vp.add_argument("point")
    vp.add_argument("--name", required=True, help="the point's name as the courier sees it")
    vp.add_argument("--agent", default=None, help="the agent's name: a new code for them is printed once")
    vp.set_defaults(func=cmd_rounds, what="point")
    mf = csub.add_parser("manifest", help="sign a courier's round manifest for their handheld and queue it")
    mf.add_argument("dir", type=Path)
    mf.add_argument("outlet")
    mf.add_argument("device")
    mf.add_argument("round", help="the round's id")
    mf.add_argument("file", help='the round\'s parcels as JSON: [{"parcel", "to", "point"?, "token"?}]')
    mf.set_defaults(func=cmd_rounds, what="manifest")
    tk = csub.add_parser("tokens", help="where each delivery code's text to its recipient is")
    tk.add_argument("dir", type=Path)
    tk.add_argument("outlet")
    tk.set_defaults(func=cmd_tokens)
    _boards_parser(csub)
