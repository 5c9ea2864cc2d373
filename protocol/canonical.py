# Canonical JSON: the one byte form used for envelopes on the wire and for the
# bytes a command signature covers. CPython's json and MicroPython's json
# differ (key order, ensure_ascii, float formatting), so signing can't rely on
# either: this encoder sorts keys, emits no whitespace, writes non-ASCII as raw
# UTF-8 and escapes only what JSON requires.
#
# Floats are refused on purpose: ESP32 MicroPython builds use single-precision
# floats whose text form differs from CPython's, which would break signatures
# and golden vectors. Quantities travel as scaled integers (centi-degrees,
# 1e-7 degrees of latitude, millimetres).
#
# Integers are bounded to the I-JSON safe range, |n| <= 2**53 - 1 (RFC 7493):
# every JSON implementation reads those exactly, SQLite stores them in its
# 64-bit INTEGER, and a hostile `ts` of 10**20 is refused here, where it
# enters, instead of overflowing a database binding further in.

import json

from protocol.errors import BadField, MalformedPayload

MAX_DEPTH = 8
MAX_INT = 9007199254740991  # 2**53 - 1
_INT_RANGE = "integers must lie within +-(2**53 - 1)"

_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _str(s, out):
    out.append('"')
    start = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c in _ESC or ord(c) < 0x20:
            if i > start:
                out.append(s[start:i])
            esc = _ESC.get(c)
            out.append(esc if esc else "\\u%04x" % ord(c))
            start = i + 1
        i += 1
    if start < n:
        out.append(s[start:])
    out.append('"')


def _enc(obj, out, depth, path):
    if depth > MAX_DEPTH:
        raise BadField(path + ": nested deeper than %d" % MAX_DEPTH)
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        if obj > MAX_INT or obj < -MAX_INT:
            raise BadField(path + ": " + _INT_RANGE)
        out.append(str(obj))
    elif isinstance(obj, str):
        _str(obj, out)
    elif isinstance(obj, float):
        raise BadField(path + ": floats are not allowed, use a scaled integer")
    elif isinstance(obj, dict):
        out.append("{")
        first = True
        for k in sorted(obj):
            if not isinstance(k, str):
                raise BadField(path + ": object keys must be strings")
            if not first:
                out.append(",")
            first = False
            _str(k, out)
            out.append(":")
            _enc(obj[k], out, depth + 1, path + "." + k)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i in range(len(obj)):
            if i:
                out.append(",")
            _enc(obj[i], out, depth + 1, path + "[%d]" % i)
        out.append("]")
    else:
        raise BadField(path + ": unsupported type " + type(obj).__name__)


def dumps(obj):
    """Canonical bytes of a JSON value built from dict/list/str/int/bool/None."""
    out = []
    _enc(obj, out, 0, "$")
    try:
        return "".join(out).encode("utf-8")
    except Exception:
        # CPython: a lone surrogate, e.g. from a JSON "\ud800" escape.
        raise BadField("$: text is not valid Unicode (lone surrogate)")


def reject_surrogate_escapes(text):
    """Refuse JSON text with backslash-u escapes of D800-DFFF, before decoding.

    CPython turns an escaped pair into one astral character but a lone one
    into an unencodable surrogate; MicroPython turns either into CESU-8
    bytes. Refusing the escapes keeps both interpreters' verdicts and bytes
    identical. Our encoder never writes them: it sends raw UTF-8.
    """
    i = text.find("\\")
    n = len(text)
    while 0 <= i < n - 1:
        nxt = text[i + 1]
        if nxt == "u" and i + 3 < n and text[i + 2] in "dD" and text[i + 3] in "89abcdefABCDEF":
            raise BadField("$: \\u%s escape: surrogates are not allowed, send raw UTF-8"
                           % text[i + 2:i + 6])
        i = text.find("\\", i + 2)


class _FloatSeen(Exception):
    pass


def _float_seen(text):
    raise _FloatSeen()


def _bounded_int(text):
    # Up to 15 digits cannot exceed MAX_INT: most integers skip the compare.
    n = int(text)
    if len(text) > 15 and (n > MAX_INT or n < -MAX_INT):
        raise _FloatSeen()
    return n


try:
    # CPython only (MicroPython's json has no decoder class): floats,
    # NaN/Infinity and out-of-range integers stop the C decoder, so a payload
    # that decodes here with few enough brackets needs no walk in Python.
    # Anything else takes the walk, which names the offending path; the
    # verdicts are the same.
    _FAST = json.JSONDecoder(parse_float=_float_seen, parse_constant=_float_seen,
                             parse_int=_bounded_int).decode
except AttributeError:
    _FAST = None


def loads_object(payload, what):
    """Bytes off the wire -> a dict: UTF-8, no surrogate escapes, JSON, an
    object, no floats, integers within MAX_INT; each failure a
    MalformedPayload (or BadField) naming `what`."""
    obj, checked = loads_checked(payload, what)
    if not checked:
        check_value(obj, False)
    return obj


def loads_checked(payload, what):
    """loads_object, also telling whether check_value(obj, text=False) is
    already known to pass, so the caller can skip the walk: (obj, checked)."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
    except Exception:
        raise MalformedPayload("%s is not UTF-8" % what)
    reject_surrogate_escapes(text)
    checked = False
    obj = None
    if _FAST is not None and text.count("{") + text.count("[") <= MAX_DEPTH:
        try:
            obj = _FAST(text)
            checked = True
        except Exception:
            obj = None
    if not checked:
        try:
            obj = json.loads(text)
        except Exception:
            raise MalformedPayload("%s is not JSON" % what)
    if not isinstance(obj, dict):
        raise MalformedPayload("%s is JSON but not an object" % what)
    return obj, checked


def _check_text(s, path):
    try:
        s.encode("utf-8")
    except Exception:
        raise BadField(path + ": text is not valid Unicode (lone surrogate)")


def _path(where):
    parts = []
    while where is not None:
        where, key = where
        parts.append(key)
    out = "$"
    for key in reversed(parts):
        out += ("[%d]" % key) if isinstance(key, int) else ("." + key)
    return out


def _walk(obj, depth, where, text):
    # `where` is a (parent, key) chain, turned into "$.body.x" only for an
    # error: building path strings for every node cost more than the checks.
    if depth > MAX_DEPTH:
        raise BadField(_path(where) + ": nested deeper than %d" % MAX_DEPTH)
    if depth == MAX_DEPTH and isinstance(obj, (dict, list)) and obj:
        # Its members would sit one level deeper than allowed (as in dumps).
        raise BadField(_path(where) + ": nested deeper than %d" % MAX_DEPTH)
    if isinstance(obj, dict):
        for k in obj:
            v = obj[k]
            if text:
                _check_text(k, _path(where))
            if isinstance(v, (dict, list)):
                _walk(v, depth + 1, (where, k), text)
            elif isinstance(v, float):
                raise BadField(_path((where, k)) + ": floats are not allowed, use a scaled integer")
            elif isinstance(v, int):
                if v > MAX_INT or v < -MAX_INT:
                    raise BadField(_path((where, k)) + ": " + _INT_RANGE)
            elif text and isinstance(v, str):
                _check_text(v, _path((where, k)))
    elif isinstance(obj, list):
        for i in range(len(obj)):
            v = obj[i]
            if isinstance(v, (dict, list)):
                _walk(v, depth + 1, (where, i), text)
            elif isinstance(v, float):
                raise BadField(_path((where, i)) + ": floats are not allowed, use a scaled integer")
            elif isinstance(v, int):
                if v > MAX_INT or v < -MAX_INT:
                    raise BadField(_path((where, i)) + ": " + _INT_RANGE)
            elif text and isinstance(v, str):
                _check_text(v, _path((where, i)))
    elif isinstance(obj, float):
        raise BadField(_path(where) + ": floats are not allowed, use a scaled integer")
    elif isinstance(obj, int):
        if obj > MAX_INT or obj < -MAX_INT:
            raise BadField(_path(where) + ": " + _INT_RANGE)
    elif text and isinstance(obj, str):
        _check_text(obj, _path(where))


def check_value(obj, text=True):
    """Refuse what dumps() refuses, for values that arrive decoded.

    text=False skips the Unicode check, for values decoded from UTF-8 bytes
    by loads_object (which already refused surrogate escapes)."""
    _walk(obj, 0, None, text)
