"""The check for English words on a Chinese screen, shared by the
command line's tests (tests/cli/test_cli_zh.py, whose docstring says what is allowed and
why) and the pages' (the handheld's screens, the clerk's page, the dispatcher's page).

:func:`english_words` looks at every run of printable ASCII and lets through only what a
Chinese screen rightly shows in Latin letters: anything with a digit (ids, codes, numbers
with units), ALL-CAPS (acronyms, codes), backticked code, options, paths, file names,
config tables, placeholders, product names (``PROPER``), symbologies and units. A
lower-case word (a reason code, a state, a forgotten label) is what it reports.
"""

from __future__ import annotations

import re

# Lower-cased. Keep this short: every entry is a word a Chinese reader sees in Latin letters.
PROPER = {"postedge", "mosquitto", "micropython", "sqlite", "amqtt", "mpremote", "mpy-cross", "mip",
          "systemctl", "xtensawin", "village-day"}
UNITS = {"ms", "s", "min", "h", "d"}
SYMBOLOGY = re.compile(r"\b(Code 128|Code 39|QR Code|Data Matrix)\b")
FILE = re.compile(r"[\w.-]*\.(toml|json|jsonl|py|mpy|db|html)")
STRIP = "()[]{},;:!?'\"“”"


def english_words(text: str, names: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """ASCII words in ``text`` that a Chinese screen should not show."""
    bad = []
    for run in re.findall(r"[!-~]+", SYMBOLOGY.sub(" ", re.sub(r"`[^`]*`", " ", text))):
        if re.fullmatch(r"\[[a-z_.]+\]|<[a-z_]+>", run):  # a config table, a placeholder
            continue
        for tok in re.split(r"[,{}|=]", run):
            tok = tok.strip(STRIP)
            if not re.search(r"[A-Za-z]", tok) or re.search(r"\d", tok):
                continue
            if tok.startswith("-") or "/" in tok or FILE.fullmatch(tok):
                continue
            if re.fullmatch(r"[A-Z][A-Z_-]*[A-Z]|[A-Z]", tok):
                continue
            if tok.lower() in PROPER or tok in UNITS or tok in names:
                continue
            bad.append(tok)
    return bad
