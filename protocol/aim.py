# AIM symbology identifiers (ISO/IEC 15424): "]" + code letter + modifier,
# prefixed to the data by scan engines when enabled. The modifier tells e.g.
# GS1-128 (]C1) from plain Code 128 (]C0). For EAN/UPC (ISO/IEC 15420):
# ]E0 is the EAN-13 family (EAN-13, UPC-A, and UPC-E, which engines send
# either expanded or as its 8 digits), ]E4 is EAN-8, ]E3 a main symbol with
# its 2- or 5-digit add-on in one packet, ]E1/]E2 an add-on alone.

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

# (code letter, modifier) pairs whose data is a GS1 element string:
#   C1      GS1-128 (FNC1 in first position)
#   d2 d5   Data Matrix ECC 200, FNC1 first; with ECI (ISO/IEC 16022)
#   d8      DMRE (rectangular extension, ISO/IEC 21471) with FNC1 first:
#           DMRE adds 6 to the Data Matrix modifier (d7 plain, d9 AIM FNC1)
#   Q3 Q4   QR Code, FNC1 first; with ECI (ISO/IEC 18004)
#   z1 z4   Aztec, FNC1 first; with ECI (ISO/IEC 24778)
#   e0      GS1 DataBar (always GS1)
_GS1 = ("C1", "d2", "d5", "d8", "Q3", "Q4", "z1", "z4", "e0")


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
