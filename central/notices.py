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
``rows``, ``events_of``, ``event``), never by SQL of its own, so the duty
runs on either backend: SQLite beside the embedded one's events, or
PostgreSQL on scale-out, where several fronts may run it and one pass at a
time (``duties_turn``) keeps a claimed notice from being sent by another.
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
NOTICES = DutyTable("notices", "locker.deposit", (  # on PostgreSQL, a partial index of the deposits
    Column("deposit", "text"), Column("purpose", "text"), Column("outlet", "text"),
    Column("parcel", "text", null=True), Column("state", "text"), Column("attempts", "int"),
    Column("provider_id", "text", null=True), Column("error", "text", null=True), Column("at", "real")),
    key=("outlet", "deposit", "purpose"))  # a file from before the outlet was in the key is rekeyed
TOKEN = "token"  # the purpose of a delivery token's notice; its ``deposit`` column holds the parcel


_made: weakref.WeakSet[Any] = weakref.WeakSet()  # the stores whose tables are made (once per store)


def _schema(store: DutyStore) -> None:
    """The tables, once per opened store: a contacts import upserts row by row."""
    if store in _made:
        return
    for table in (CONTACTS, TOKEN_NOTICES, NOTICES):
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
        store.upsert(TOKEN_NOTICES, {"outlet": outlet, "parcel": p, "device": device, "round": round_id,
                                     "at": time.time()})
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
        _schema(self.b)

    def add_contact(self, outlet: str, parcel: str, phone: str, lang: str = "zh") -> None:
        add_contact(self.b, outlet, parcel, phone, lang)

    def states(self, outlet: str, purpose: str = "notice") -> dict[str, str]:
        """Deposit id -> the state of its notice for ``purpose`` (``sent``,
        ``retry``, ``failed``, ``no_contact``, ``no_code``) at one outlet, for reports."""
        return {r["deposit"]: r["state"] for r in self.b.rows(NOTICES.name, {"outlet": outlet,
                                                                              "purpose": purpose})}

    def _due(self) -> list[tuple[str, str, str]]:
        """(outlet, deposit id or parcel, purpose) not yet sent or given up: the
        pickup notices the events call for, then the delivery tokens queued by
        issued manifests (a token without a number yet is looked at again on
        every pass, so a contacts import after the manifest still sends it)."""
        with_notifier = self.notifier_outlets()
        due: list[tuple[str, str, str]] = []
        for outlet, _, body in self.b.events_of("notify.route"):
            if outlet not in with_notifier:
                continue
            purpose = str(body.get("purpose", "notice"))
            # a gateway routes pickup notices only: a delivery token's text is the manifest's to ask for
            if body.get("by") == "platform" and isinstance(body.get("event"), str) and purpose != TOKEN:
                due.append((outlet, body["event"], purpose))
        for outlet, eid, _ in self.b.events_of("locker.deposit"):
            if outlet not in with_notifier:
                due.append((outlet, eid, "notice"))
        tokens = sorted(self.b.rows(TOKEN_NOTICES.name, {}),
                        key=lambda r: (r["at"], r["outlet"], r["parcel"]))
        due += [(r["outlet"], r["parcel"], TOKEN) for r in tokens]
        done = {(r["outlet"], r["deposit"], r["purpose"]) for r in self.b.rows(NOTICES.name, {})
                if r["state"] != "retry" and not (r["purpose"] == TOKEN and r["state"] == "no_contact")}
        return [d for d in due if d not in done]

    def run_once(self) -> int:
        sent = 0
        for outlet, deposit, purpose in self._due():
            sent += self._token(outlet, deposit) if purpose == TOKEN else self._one(outlet, deposit, purpose)
        return sent

    def _mark(self, deposit: str, purpose: str, outlet: str, parcel: str | None, state: str,
              error: str = "", provider_id: str | None = None, attempt: bool = False) -> None:
        parcel = None if parcel is None else str(parcel)  # as the deposit named it, kept as text
        self.b.upsert(NOTICES, {"deposit": deposit, "purpose": purpose, "outlet": outlet, "parcel": parcel,
                                "state": state, "attempts": int(attempt), "provider_id": provider_id,
                                "error": error[:200], "at": self.clock()}, add=("attempts",))

    def _notice(self, outlet: str, deposit: str, purpose: str) -> dict[str, Any] | None:
        found = self.b.rows(NOTICES.name, {"outlet": outlet, "deposit": deposit, "purpose": purpose})
        return found[0] if found else None

    def _one(self, outlet: str, deposit: str, purpose: str) -> int:
        """A pickup notice: the code opened from the deposit's sealed box."""
        payload = self.b.event(outlet, deposit)
        if payload is None:
            return 0  # the route came before its deposit: next pass
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
        self._mark(deposit, purpose, outlet, parcel, "retry", attempt=True)  # claimed before the call
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
