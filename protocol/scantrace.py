# What a scan may leave behind once it leaves the scanner.
#
# A scanner reads whatever is held under it: besides parcel labels, a
# customer's payment code (支付宝/微信 付款码: 16-24 digits shown as a Code 128
# barcode or a QR code), the 18-digit number of a resident ID card, a health
# code, a delivery token. Those must not travel upstream or sit in a log, so
# a scan event carries the content only when it is one of:
#
#   * a parcel id: S10 (s10), China Post domestic waybill (cn_ems,
#     cn_parcel), or an SSCC read as a GS1 element string with AI (00). An
#     SSCC that arrived as 18 bare digits is not one here: 18 digits are
#     exactly what a payment code and an ID number are, and one in ten of
#     them passes the GS1 check digit;
#   * a value the platform itself named for this device (``known``: the
#     courier's manifest, a locker's retrieval list), whatever its form.
#
# Everything else leaves as its kind when it is a recognised code
# ("ean13", "gs1", "sscc", or "pe_token" for a postedge delivery token...),
# its symbology when the engine sent an AIM identifier, its length and
# ``sha8``, the first 32 bits of the SHA-256 of its data: enough to see the
# same code scanned again, far too few to recover it (a payment code has
# about 10^18 values per hash value).
#
# MicroPython code: the counter scanner's firmware and the handheld both use
# it, so the two agree on what an invalid scan leaves behind.

import binascii
import hashlib

from protocol import aim, barcodes

# postedge's own codes, recognised by their prefix: the kind is kept, never
# the content (a delivery token and a pairing code are secrets; a campaign
# code says nothing a scan event needs).
POSTEDGE_PREFIXES = (("PE-H:", "pe_token"), ("PE-PAIR:", "pe_pair"), ("PE-CAMP:", "pe_campaign"))


def fingerprint(text):
    """A scan's length and sha8 (see the header); ``text`` str or bytes."""
    if isinstance(text, str):
        text = text.encode()
    return {"length": len(text), "sha8": binascii.hexlify(hashlib.sha256(text).digest()[:4]).decode()}


def parcel_content(v):
    """True when a ``barcodes.classify`` verdict is a parcel id whose number
    may travel (see the header: a bare 18-digit SSCC may not)."""
    if not v.get("ok") or v.get("kind") not in barcodes.PARCEL_KINDS:
        return False
    return v["kind"] != "sscc" or "ais" in v


def _data(text):
    """The read without its AIM identifier and the engine's line ending: the
    same code gives the same sha8 whether or not the engine sends one."""
    data = aim.parse(text)[2]
    j = len(data)
    while j and data[j - 1] in "\r\n\t ":
        j -= 1
    i = 0
    while i < j and data[i] == " ":
        i += 1
    return data[i:j]


def trace(text, known=None):
    """The fields a scan event may carry about one read (``text`` as read,
    with its AIM identifier if any): ``{"code", "kind"}`` for a parcel id or
    a value in ``known``; otherwise ``{"length", "sha8"}`` with ``kind`` for a
    recognised code and ``symbology`` when the read names one."""
    if not isinstance(text, str):
        text = ""
    v = barcodes.classify(text)
    if v["ok"] and (parcel_content(v) or (known is not None and v["value"] in known)):
        return {"code": v["value"], "kind": v["kind"]}
    data = _data(text)
    out = fingerprint(data)
    if v["ok"]:
        out["kind"] = v["kind"]
    else:
        for prefix, kind in POSTEDGE_PREFIXES:
            if data.upper().startswith(prefix):
                out["kind"] = kind
                break
    sym = aim.parse(text)[0]
    if sym is not None:
        out["symbology"] = sym
    return out


def keeps_content(text, known=None):
    """True when ``trace`` would keep the content of this read."""
    return "code" in trace(text, known)
