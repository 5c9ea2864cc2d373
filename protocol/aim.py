# AIM symbology identifiers (ISO/IEC 15424): "]" + code letter + modifier,
# prefixed to the data by scan engines when enabled. The modifier tells e.g.
# GS1-128 (]C1) from plain Code 128 (]C0), or EAN-8 (]E4) from EAN-13 (]E0).

SYMBOLOGIES = {
    "A": "code39",
    "C": "code128",
    "d": "datamatrix",
    "E": "ean_upc",
    "e": "gs1_databar",
    "F": "codabar",
    "G": "code93",
    "H": "code11",
    "I": "itf",
    "L": "pdf417",
    "M": "msi",
    "Q": "qr",
    "S": "code2of5",
    "X": "other",
    "z": "aztec",
}

# (code letter, modifier) pairs whose data is a GS1 element string.
_GS1 = ("C1", "d2", "Q3", "e0", "z1")


def parse(text):
    """Return (symbology, modifier, data, is_gs1).

    Text without an identifier gives (None, None, text, False). An unknown
    code letter is kept as "aim_<letter>" rather than refused: the data is
    still usable, only its symbology is unnamed.
    """
    if len(text) >= 3 and text[0] == "]":
        letter = text[1]
        mod = text[2]
        if ("A" <= letter <= "Z" or "a" <= letter <= "z") and (
            "0" <= mod <= "9" or "A" <= mod <= "Z"
        ):
            name = SYMBOLOGIES.get(letter, "aim_" + letter)
            if letter == "E" and mod == "4":
                name = "ean8"
            elif letter == "E" and mod == "0":
                name = "ean13"
            return (name, mod, text[3:], (letter + mod) in _GS1)
    return (None, None, text, False)
