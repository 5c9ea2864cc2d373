"""The platform re-checks every counter acceptance against the documents it cites.

A gateway prices an outbound parcel offline from the box catalogue and tariff
the platform signed (``central/documents.py``) and names them in its
``counter.accept`` (kind, version, the first 16 hex of the signed bytes'
SHA-256). Root on the outlet box could skip the gateway's own checks, so the
signature alone does not prove the postage charged: here the platform looks
the cited documents up among those it issued, and recomputes the quote with
the same code the counter ran (``common/tariff.py``, ``common/box_catalogue.py``).

Verdicts, one per acceptance (kept in ``postage_checks`` with the figures
they rest on, as JSON, so a page can say them in its reader's language;
logged when not ``ok``):
``ok``; ``no_document`` (the acceptance cites none: the counter had no
tariff); ``unknown_document`` (a version the platform never issued, or a digest
that is not its document's: something other than the platform's document
priced it); ``postage_mismatch`` (the recomputed postage or zone differs);
``box_unknown`` / ``box_overweight`` (the box is not in the cited catalogue,
or the weight is over its limit); ``malformed``.

It runs on either backend (``central/duty_store.py``: the acceptances not
checked yet, the issued documents, its table of verdicts), so a scale-out
``postedge central run`` audits what its fronts took in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from central.documents import DOCS
from central.duty_store import Column, DutyStore, DutyTable
from common import platform_docs as pd
from common.box_catalogue import Catalogue
from common.logs import recorder
from common.tariff import PostageError, Tariff

record = recorder(__name__)

CHECKS = DutyTable("postage_checks", "counter.accept", (
    Column("outlet", "text"), Column("event", "text"), Column("verdict", "text"), Column("detail", "text"),
    Column("at", "real")), indexes=(("at",),))  # the newest verdicts first (``verdicts``, a page)
VERDICTS = ("ok", "no_document", "unknown_document", "postage_mismatch", "box_unknown", "box_overweight",
            "malformed")


class PostageAudit:
    def __init__(self, backend: DutyStore, clock: Callable[[], float] = time.time) -> None:
        self.b = backend
        self.clock = clock
        # (kind, version) -> the issued document's row: a version is recorded once and never
        # changed, so a pass over many acceptances asks the store once per document, not per
        # acceptance (on scale-out each ask is a round trip); a version not found is asked again
        self._docs: dict[tuple[str, int], dict[str, Any]] = {}
        self.b.duty_table(DOCS)  # the issued documents' table, if none yet
        self.b.duty_table(CHECKS)

    def run_once(self) -> int:
        """Check every acceptance not checked yet; how many were not ``ok``."""
        bad = 0
        for outlet, eid, body in self.b.undecided(CHECKS.event_type, CHECKS.name):
            verdict, detail = self.check(outlet, body)
            self.b.decide(CHECKS.name, {"outlet": outlet, "event": eid, "verdict": verdict,
                                        "detail": json.dumps(detail), "at": self.clock()})
            if verdict != "ok":
                bad += 1
                record("postage_check_failed", outlet=outlet, event=eid, verdict=verdict, **detail)
        return bad

    def check(self, outlet: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(verdict, what it rests on: the figures a person needs to act) for one body."""
        cite = body.get("tariff")
        if cite is None:
            return "no_document", {}
        tariff_doc = self._issued(outlet, cite, "tariff")
        if isinstance(tariff_doc, dict):
            return "unknown_document", tariff_doc
        try:
            quote = Tariff(tariff_doc).quote(str(body.get("service")), str(body["recipient"]["postcode"]),
                                             body["weight_g"])
        except PostageError as e:  # the counter would have refused it: no price was right
            return "postage_mismatch", {"why": "unpriceable", "reason": e.reason,
                                        "weight": body.get("weight_g")}
        except (KeyError, TypeError) as e:
            return "malformed", {"missing": str(e)[:40]}
        if (quote.fen, quote.zone) != (body.get("postage_fen"), body.get("zone")):
            return "postage_mismatch", {"why": "price", "charged": body.get("postage_fen"),
                                        "zone": body.get("zone"), "want": quote.fen, "want_zone": quote.zone}
        if body.get("catalogue") is not None:
            cat_doc = self._issued(outlet, body["catalogue"], "box_catalogue")
            if isinstance(cat_doc, dict):
                return "unknown_document", cat_doc
            box = Catalogue(cat_doc).get(str(body.get("box")))
            if box is None:
                return "box_unknown", {"box": str(body.get("box"))[:40], "version": cat_doc.version}
            if body["weight_g"] > box.max_g:
                return "box_overweight", {"box": box.code, "weight": body["weight_g"], "limit": box.max_g}
        return "ok", {}

    def _issued(self, outlet: str, cite: Any, kind: str) -> pd.SignedDoc | dict[str, Any]:
        """The platform's own document a citation names, or why there is none."""
        version = cite.get("version") if isinstance(cite, dict) else None
        # a version is a whole number, not JSON's true (PostgreSQL cannot compare a boolean
        # with its bigint: the lookup would fail and stop every pass at this acceptance)
        if not isinstance(cite, dict) or cite.get("kind") != kind or not isinstance(version, int) \
                or isinstance(version, bool):
            return {"kind": kind, "version": "?", "why": "citation"}
        row = self._docs.get((kind, version))
        if row is None:
            found = self.b.rows(DOCS.name, {"kind": kind, "version": version})
            if not found:
                return {"kind": kind, "version": version, "why": "never_issued"}
            row = self._docs[(kind, version)] = found[0]
        doc, digest = json.loads(row["doc"]), row["digest"]
        if cite.get("digest") != digest[:16]:
            return {"kind": kind, "version": version, "why": "digest"}
        if outlet not in doc["outlets"] and "*" not in doc["outlets"]:
            return {"kind": kind, "version": version, "why": "outlet"}
        return pd.SignedDoc(kind, doc["version"], doc["kid"], doc["iat"], doc["body"], digest)

    def verdicts(self, outlet: str | None = None, failed_only: bool = False,
                 newest: int | None = None) -> list[dict[str, Any]]:
        """The checks made, oldest first; ``failed_only`` leaves out the ``ok``
        ones and ``newest`` keeps only the last N (newest first then), so
        the dispatcher's page reads only the rows it shows."""
        rows = self.b.rows(CHECKS.name, {"outlet": outlet} if outlet else {},
                           unlike={"verdict": "ok"} if failed_only else None, newest=newest)
        if newest is None:
            rows.sort(key=lambda r: r["at"])  # stable: checks made at one instant keep their order
        return [{"outlet": r["outlet"], "event": r["event"], "verdict": r["verdict"],
                 "detail": json.loads(r["detail"]), "at": r["at"]} for r in rows]
