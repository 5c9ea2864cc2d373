"""Per-device keys from the central service for ``outlet init``.

With ``[central] url`` and the outlet's login (``username``/``password``, as
``central outlet add`` printed them) in the description, ``init`` asks the
central service's ``POST /v1/keys`` (``central/front.py``) for the key of
every device in the description: the platform registers them and answers
each device's own key section (and the outlet notifier key if the outlet is
registered with a notifier). The master key stays central; this box only
ever holds what its own devices get. Over HTTPS verified with
``[central] ca_file`` (or the system's CAs), never plain HTTP.

Without a login (a pilot with no central service yet) ``init`` derives the
keys itself from a master key of its own (``build.py`` ``_pilot_keys``), the
embedded backend's way; a key file given as ``[central] keys`` wins over both.

A device the central registry has retired gets no key: ``init`` stops and
names it rather than writing a configuration whose key the platform no
longer signs for (retire it here too, ``outlet retire-device``, or take it
out of the description)."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_S = 20.0


class CentralKeysError(RuntimeError):
    pass


def keys_url(url: str) -> str:
    """``/v1/keys`` beside the batch URL ``[upstream] url`` names
    (``https://central/v1/batches`` -> ``https://central/v1/keys``)."""
    u = urlsplit(url)
    path = u.path.rstrip("/")
    path = path[: -len("/batches")] + "/keys" if path.endswith("/v1/batches") else "/v1/keys"
    return f"{u.scheme}://{u.netloc}{path}"


def fetch(url: str, outlet: str, username: str, password: str, ca_file: Path | None,
          devices: list[tuple[str, str]]) -> dict[str, Any]:
    """The central service's answer: ``{"keys": {device: section}, "retired": [...],
    "notifier"?: {"1": hex}}``; CentralKeysError with the reason otherwise."""
    target = urlsplit(keys_url(url))
    if target.scheme != "https":
        raise CentralKeysError(f"[central] url must be https:// to fetch keys, got {url!r}")
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise CentralKeysError(f"[central] ca_file {ca_file}: {e}") from None
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    body = json.dumps({"devices": [{"id": d, "kind": k} for d, k in devices]}).encode()
    conn = http.client.HTTPSConnection(target.hostname or "", target.port or 443, timeout=TIMEOUT_S,
                                       context=ctx)
    try:
        conn.request("POST", target.path, body=body,
                     headers={"Authorization": f"Basic {auth}", "X-Postedge-Outlet": outlet,
                              "Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read(4 * 1024 * 1024)
    except (OSError, http.client.HTTPException) as e:
        raise CentralKeysError(f"cannot reach the central service at {keys_url(url)}: {e}") from None
    finally:
        conn.close()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if r.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
        why = doc.get("error", "") if isinstance(doc, dict) else raw[:120].decode("utf-8", "replace")
        hint = " (the outlet's login: central outlet add)" if r.status == 401 else ""
        raise CentralKeysError(f"the central service refused the key request: HTTP {r.status} {why}{hint}")
    if doc.get("retired"):
        raise CentralKeysError(
            f"the central service has retired {', '.join(map(str, doc['retired']))}: it issues no key for "
            "them; retire them here too (postedge outlet retire-device) or take them out of the description")
    return doc


def write(doc: dict[str, Any], tmp: Path) -> tuple[Path, Path | None]:
    """The key file (and notifier key file) provision takes, in ``tmp``."""
    key_file = tmp / "central-keys.json"
    key_file.write_text(json.dumps(doc["keys"]))
    notifier = doc.get("notifier")
    if not isinstance(notifier, dict) or not notifier:
        return key_file, None
    nf = tmp / "central-notifier.toml"
    nf.write_text("[keys]\n" + "".join(f'"{int(kv)}" = "{str(k)}"\n' for kv, k in notifier.items()))
    return key_file, nf
