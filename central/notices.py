"""Pickup notices the platform sends, exactly once per deposit and purpose.

The hand-off with the gateway's own modem (docs/gateway.md,
"Notifications"): at an outlet with a notifier the platform sends only on a
``notify.route`` event whose ``by`` is ``"platform"`` (the gateway decided,
in one place, that the platform sends this one); at an outlet without a
notifier it sends on the ``locker.deposit`` itself. The code is opened from
the locker's sealed box with the platform's key (``central/keys.py``); it
never goes into a log, a table or an event.

Exactly once: a notice is claimed in ``notices`` (keyed by outlet, deposit
and purpose: a deposit's event id is made by its locker, and locker names
repeat from outlet to outlet, see ``central/embedded.py``) before the
provider is called, with that key as the provider's reference, so a crash
between the call and the record is retried with the same reference, which
an SMS provider's idempotency key deduplicates. A provider answer of 4xx
is final (``failed``); 5xx or no answer is retried on the next pass, up to
``MAX_ATTEMPTS``.

The provider adapter (``HttpSms``) speaks a plain JSON-over-HTTPS shape
(``{"to", "text", "ref"}`` with a bearer token, ``{"id"}`` back) that the
usual Chinese SMS gateways' HTTP APIs map onto; an adapter per provider
implements ``SmsProvider``.

Delivery tokens go the same way. A manifest issued with hand deliveries
(``central/manifests.py``) queues one text per parcel (``queue_tokens``,
keyed by outlet and parcel, purpose ``token``, the provider's reference
``<outlet>/<parcel>/token``); the pass derives the token again from the
master key (``KeyService.delivery_token``), so a retry or a round issued
again texts the token the handheld's manifest checks, never a second one,
and no table holds it. A parcel with no number is ``no_contact``, logged
once, shown by ``token_states`` and looked at again on every pass (a
contacts import may come after the manifest).

Every table here is kept through ``central/duty_store.py`` (``upsert``,
``rows``, ``delete``, ``events_after``, ``event``), never by SQL of its own,
so the duty runs on either backend: SQLite beside the embedded one's
events, or PostgreSQL on scale-out, where several fronts may run it and one
pass at a time (``duties_turn``) keeps a claimed notice from being sent by
another.

A pass reads only what is new, so its cost follows the traffic, not every
deposit ever stored: the events stored since the last pass
(``events_after``, through an index of each type, from a cursor kept in
``notice_cursors`` once a pass is done, so a pass that failed reads the
same events again), and the notices still pending (``notice_pending``: a
retry, a route that came before its deposit, a delivery token queued or
without a number yet), a row of which goes once its notice is settled. On
PostgreSQL several workers commit out of order, so the store re-reads a
window behind its cursor; an event read again is skipped (remembered from
the last pass, or its notice found settled), an event committed late is
read then. A first pass (a store from before the cursors) reads every
event and queued token once.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from central.duty_store import Column, DutyStore, DutyTable
from central.keys import KeyService
from central.messages import TEXT
from common.logs import recorder
from protocol import codes
from protocol.errors import ProtocolError

MAX_ATTEMPTS = 8
record = recorder(__name__)

# The tables, in the duty store's vocabulary (``central/duty_store.py``), so
# either backend keeps them: SQLite beside the embedded one's events,
# PostgreSQL on scale-out. None answers one event, so each names its key.
CONTACTS = DutyTable("contacts", "", (
    Column("outlet", "text"), Column("parcel", "text"), Column("phone", "text"), Column("lang", "text")),
    key=("outlet", "parcel"))
TOKEN_NOTICES = DutyTable("token_notices", "", (
    Column("outlet", "text"), Column("parcel", "text"), Column("device", "text"), Column("round", "text"),
    Column("at", "real")), key=("outlet", "parcel"))
NOTICES = DutyTable("notices", "locker.deposit", (  # indexes of the deposits and routes, which a pass reads
    Column("deposit", "text"), Column("purpose", "text"), Column("outlet", "text"),
    Column("parcel", "text", null=True), Column("state", "text"), Column("attempts", "int"),
    Column("provider_id", "text", null=True), Column("error", "text", null=True), Column("at", "real")),
    key=("outlet", "deposit", "purpose"),  # a file from before the outlet was in the key is rekeyed
    reads=("notify.route", "locker.deposit"))
# Where each pass stopped reading an event type (``DutyStore.events_after``'s
# cursor), so the next reads only what came since; outlet ``*``: every outlet.
CURSORS = DutyTable("notice_cursors", "", (
    Column("outlet", "text"), Column("stream", "text"), Column("after", "real")), key=("outlet", "stream"))
# The notices a pass must look at again, and only those: a retry, a route
# that came before its deposit, a delivery token queued or still without a
# number. A row goes when its notice is settled, so this stays small.
PENDING = DutyTable("notice_pending", "", (
    Column("outlet", "text"), Column("deposit", "text"), Column("purpose", "text"), Column("at", "real")),
    key=("outlet", "deposit", "purpose"))
TOKEN = "token"  # the purpose of a delivery token's notice; its ``deposit`` column holds the parcel
STREAMS = ("notify.route", "locker.deposit")  # the event types a pass reads, in this order
ALL = "*"  # the cursors' outlet: one cursor per type for every outlet


_made: weakref.WeakSet[Any] = weakref.WeakSet()  # the stores whose tables are made (once per store)


def _schema(store: DutyStore) -> None:
    """The tables, once per opened store: a contacts import upserts row by row."""
    if store in _made:
        return
    for table in (CONTACTS, TOKEN_NOTICES, NOTICES, CURSORS, PENDING):
        store.duty_table(table)
    _made.add(store)


def add_contact(store: DutyStore, outlet: str, parcel: str, phone: str, lang: str = "zh") -> None:
    """The villager's number for a parcel, as the parcel system hands it over."""
    _schema(store)
    store.upsert(CONTACTS, {"outlet": outlet, "parcel": parcel, "phone": phone, "lang": lang})


def queue_tokens(store: DutyStore, outlet: str, device: str, round_id: str, parcels: list[str]) -> list[str]:
    """Queue a text of each parcel's delivery token to its villager (sent by
    ``Notices``, once per outlet and parcel whatever round carries it again);
    the parcels that have no number yet, for the operator to be told."""
    _schema(store)
    for p in parcels:
        now = time.time()
        store.upsert(TOKEN_NOTICES, {"outlet": outlet, "parcel": p, "device": device, "round": round_id,
                                     "at": now})
        store.upsert(PENDING, {"outlet": outlet, "deposit": p, "purpose": TOKEN, "at": now})
    return without_number(store, outlet, parcels)


def without_number(store: DutyStore, outlet: str, parcels: list[str]) -> list[str]:
    """Of ``parcels``, those with no villager's number at ``outlet``."""
    _schema(store)
    have = {r["parcel"] for r in store.rows(CONTACTS.name, {"outlet": outlet})}
    return [p for p in parcels if p not in have]


def token_states(store: DutyStore, outlet: str) -> dict[str, str]:
    """Parcel -> where its delivery token's text is (``queued`` until a pass
    has looked at it, then ``sent``, ``retry``, ``failed`` or ``no_contact``)."""
    _schema(store)
    state = {r["deposit"]: r["state"] for r in store.rows(NOTICES.name, {"outlet": outlet, "purpose": TOKEN})}
    queued = sorted(r["parcel"] for r in store.rows(TOKEN_NOTICES.name, {"outlet": outlet}))
    return {p: state.get(p, "queued") for p in queued}


def settled(purpose: str, state: str) -> bool:
    """A notice no pass looks at again: anything but a retry, and for a
    delivery token anything but a missing number either."""
    return state != "retry" and not (purpose == TOKEN and state == "no_contact")


class SmsError(Exception):
    def __init__(self, detail: str, final: bool) -> None:
        super().__init__(detail)
        self.final = final


class SmsProvider(Protocol):
    def send(self, to: str, text: str, ref: str) -> str:
        """Send one text; the provider's message id. Raises SmsError."""
        ...


class HttpSms:
    """A provider behind ``POST url`` with a bearer token (see the module doc)."""

    def __init__(self, url: str, token: str, ctx: ssl.SSLContext | None = None,
                 timeout_s: float = 10.0) -> None:
        self.url, self.token, self.ctx, self.timeout_s = url, token, ctx, timeout_s

    def send(self, to: str, text: str, ref: str) -> str:
        req = urllib.request.Request(self.url, data=json.dumps({"to": to, "text": text, "ref": ref}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.token}"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.ctx) as r:
                doc = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise SmsError(f"http {e.code}", final=400 <= e.code < 500 and e.code != 429) from e
        except (OSError, ValueError) as e:
            raise SmsError(f"{type(e).__name__}: {e}", final=False) from e
        return str(doc.get("id", ""))[:64]


class Notices:
    """One pass (``run_once``) sends what is due; ``central run`` calls it on
    a timer, on either backend: it asks only for ``central/duty_store.py``."""

    def __init__(self, backend: DutyStore, master: bytes, provider: SmsProvider,
                 notifier_outlets: Callable[[], set[str]], clock: Callable[[], float] = time.time) -> None:
        self.b = backend
        self.master = master
        self.provider = provider
        self.notifier_outlets = notifier_outlets
        self.clock = clock
        # per event type, the events the last pass read: the store may answer
        # them again (its window for late commits), and they are skipped then
        self._read: dict[str, set[tuple[str, str]]] = {}
        self._pending: set[tuple[str, str, str]] = set()  # this pass's rows of ``notice_pending``
        _schema(self.b)

    def add_contact(self, outlet: str, parcel: str, phone: str, lang: str = "zh") -> None:
        add_contact(self.b, outlet, parcel, phone, lang)

    def states(self, outlet: str, purpose: str = "notice") -> dict[str, str]:
        """Deposit id -> the state of its notice for ``purpose`` (``sent``,
        ``retry``, ``failed``, ``no_contact``, ``no_code``) at one outlet, for reports."""
        return {r["deposit"]: r["state"] for r in self.b.rows(NOTICES.name, {"outlet": outlet,
                                                                              "purpose": purpose})}

    def _due(self) -> tuple[list[tuple[str, str, str]], set[tuple[str, str, str]], dict[str, float],
                            dict[str, set[tuple[str, str]]], bool]:
        """(outlet, deposit id or parcel, purpose) to look at in this pass,
        those of them pending, the cursors to keep once it is done, the
        events read (the next read may answer them again: they are skipped
        then), and whether this was a first pass.

        What to look at: the pending notices (retries, routes before their
        deposits, delivery tokens; a token without a number is looked at
        again on every pass, so a contacts import after the manifest still
        sends it), then the pickup notices the events stored since the last
        pass call for. Only those events are read (``events_after``, by an
        index), never every deposit ever stored. A first pass (no cursor
        yet, or a store from before them) reads every event and every
        queued token once."""
        with_notifier = self.notifier_outlets()
        pending = sorted(self.b.rows(PENDING.name, {}), key=lambda r: (r["at"], r["outlet"], r["deposit"]))
        due = [(r["outlet"], r["deposit"], r["purpose"]) for r in pending]
        cursors: dict[str, float] = {}  # those that moved
        read: dict[str, set[tuple[str, str]]] = {}
        first = False
        for stream in STREAMS:
            found = self.b.rows(CURSORS.name, {"outlet": ALL, "stream": stream})
            cursor = float(found[0]["after"]) if found else None
            first = first or cursor is None
            events, after = self.b.events_after(stream, cursor)
            if after != cursor:
                cursors[stream] = after
            seen, read[stream] = self._read.get(stream, set()), set()
            for outlet, eid, body in events:
                read[stream].add((outlet, eid))
                if (outlet, eid) in seen:
                    continue  # answered by an earlier pass: read again in the store's window
                if stream == "locker.deposit":
                    if outlet not in with_notifier:
                        due.append((outlet, eid, "notice"))
                    continue
                purpose = str(body.get("purpose", "notice"))
                # a gateway routes pickup notices only: a delivery token's text is the manifest's to ask for
                if (outlet in with_notifier and body.get("by") == "platform"
                        and isinstance(body.get("event"), str) and purpose != TOKEN):
                    due.append((outlet, body["event"], purpose))
        if first:
            tokens = sorted(self.b.rows(TOKEN_NOTICES.name, {}),
                            key=lambda r: (r["at"], r["outlet"], r["parcel"]))
            due += [(r["outlet"], r["parcel"], TOKEN) for r in tokens]
        return list(dict.fromkeys(due)), set(due[:len(pending)]), cursors, read, first

    def run_once(self) -> int:
        due, self._pending, cursors, read, first = self._due()
        # a first pass looks at every deposit ever stored: their notices in one read, not one each
        known = ({(r["outlet"], r["deposit"], r["purpose"]): r["state"]
                  for r in self.b.rows(NOTICES.name, {})} if first else None)
        sent = 0
        for outlet, deposit, purpose in due:
            if known is not None:
                state = known.get((outlet, deposit, purpose))
            else:
                notice = self._notice(outlet, deposit, purpose)
                state = None if notice is None else notice["state"]
            if state is not None and settled(purpose, state):
                self._settle(outlet, deposit, purpose)  # a token queued again, a pass that died mid-way
                continue
            sent += self._token(outlet, deposit) if purpose == TOKEN else self._one(outlet, deposit, purpose)
        for stream, after in cursors.items():  # only now: a pass that failed reads the same events again
            self.b.upsert(CURSORS, {"outlet": ALL, "stream": stream, "after": after})
        self._read = read
        return sent

    def _mark(self, deposit: str, purpose: str, outlet: str, parcel: str | None, state: str,
              error: str = "", provider_id: str | None = None, attempt: bool = False,
              claim: bool = False) -> None:
        """Record a notice's state; unless it is the claim before the
        provider's call, keep it pending (or not) by that state."""
        parcel = None if parcel is None else str(parcel)  # as the deposit named it, kept as text
        self.b.upsert(NOTICES, {"deposit": deposit, "purpose": purpose, "outlet": outlet, "parcel": parcel,
                                "state": state, "attempts": int(attempt), "provider_id": provider_id,
                                "error": error[:200], "at": self.clock()}, add=("attempts",))
        if claim:
            return  # a pass that dies now reads the event again (its cursor is kept at the end)
        if settled(purpose, state):
            self._settle(outlet, deposit, purpose)
        else:
            self._keep(outlet, deposit, purpose)

    def _keep(self, outlet: str, deposit: str, purpose: str) -> None:
        """Looked at again on the next pass (written once, not on every pass it waits)."""
        if (outlet, deposit, purpose) not in self._pending:
            self.b.upsert(PENDING, {"outlet": outlet, "deposit": deposit, "purpose": purpose,
                                    "at": self.clock()})
            self._pending.add((outlet, deposit, purpose))

    def _settle(self, outlet: str, deposit: str, purpose: str) -> None:
        """No longer looked at: its pending row goes, if it has one."""
        if (outlet, deposit, purpose) in self._pending:
            self.b.delete(PENDING, {"outlet": outlet, "deposit": deposit, "purpose": purpose})
            self._pending.discard((outlet, deposit, purpose))

    def _notice(self, outlet: str, deposit: str, purpose: str) -> dict[str, Any] | None:
        found = self.b.rows(NOTICES.name, {"outlet": outlet, "deposit": deposit, "purpose": purpose})
        return found[0] if found else None

    def _one(self, outlet: str, deposit: str, purpose: str) -> int:
        """A pickup notice: the code opened from the deposit's sealed box."""
        payload = self.b.event(outlet, deposit)
        if payload is None:  # the route came before its deposit: next pass
            self._keep(outlet, deposit, purpose)
            return 0
        env: dict[str, Any] = json.loads(payload)
        body = env.get("body", {})
        parcel = body.get("parcel")
        contact = self._contact(outlet, parcel)
        if contact is None:
            self._mark(deposit, purpose, outlet, parcel, "no_contact")
            return 0
        try:
            code = KeyService(outlet, self.master).open_code(env)
        except (ProtocolError, ValueError, KeyError) as e:
            self._mark(deposit, purpose, outlet, parcel, "no_code", error=str(e))
            record("notice_no_code", deposit=deposit, reason=str(e)[:100])
            return 0
        phone, lang = contact
        expires = body.get("expires")
        until = time.strftime("%m-%d %H:%M", time.localtime(expires)) if isinstance(expires, int) else "?"
        text = TEXT.t("notice.sms", lang, parcel=str(parcel)[-6:], compartment=body.get("compartment", "?"),
                      locker=deposit.split(":")[0], code=code, expires=until)
        return self._send(outlet, deposit, purpose, parcel, phone, text)

    def _token(self, outlet: str, parcel: str) -> int:
        """A villager's hand-delivery token (``queue_tokens``), derived again
        from the master key (``KeyService.delivery_token``): the same token
        whatever is retried or issued again, and kept nowhere."""
        contact = self._contact(outlet, parcel)
        if contact is None:
            if self._notice(outlet, parcel, TOKEN) is None:
                record("token_no_contact", outlet=outlet, parcel=parcel)
            self._mark(parcel, TOKEN, outlet, parcel, "no_contact")
            return 0
        phone, lang = contact
        token = codes.format_token(KeyService(outlet, self.master).delivery_token(parcel))
        text = TEXT.t("notice.token_sms", lang, parcel=parcel[-6:], token=token)
        return self._send(outlet, parcel, TOKEN, parcel, phone, text)

    def _contact(self, outlet: str, parcel: Any) -> tuple[str, str] | None:
        if not isinstance(parcel, str):
            return None
        found = self.b.rows(CONTACTS.name, {"outlet": outlet, "parcel": parcel})
        return (found[0]["phone"], found[0]["lang"]) if found else None

    def _send(self, outlet: str, deposit: str, purpose: str, parcel: Any, phone: str, text: str) -> int:
        """The one sending path: claimed before the provider is called, with
        the notice's key as the provider's reference; 1 if it was sent."""
        known = self._notice(outlet, deposit, purpose)
        if known is not None and known["attempts"] >= MAX_ATTEMPTS:
            self._mark(deposit, purpose, outlet, parcel, "failed", error="attempts used up")
            return 0
        self._mark(deposit, purpose, outlet, parcel, "retry", attempt=True, claim=True)  # before the call
        ref = f"{outlet}/{deposit}/{purpose}"  # the provider deduplicates by it: the outlet too
        try:
            pid = self.provider.send(phone, text, ref)
        except SmsError as e:
            self._mark(deposit, purpose, outlet, parcel, "failed" if e.final else "retry", error=str(e))
            record("notice_failed", deposit=deposit, final=e.final, error=str(e)[:100])
            return 0
        self._mark(deposit, purpose, outlet, parcel, "sent", provider_id=pid)
        record("notice_sent", deposit=deposit, purpose=purpose, provider_id=pid)
        return 1
