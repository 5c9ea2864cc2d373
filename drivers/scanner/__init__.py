# Serial scan-engine drivers, one module per family:
#
#   gm65.py       Grow GM65 / GM861 (7E 00 command frames, CRC-CCITT, 02 00 replies)
#   honeywell.py  Honeywell engines (SYN T CR trigger, SYN M CR menu commands)
#   ssi.py        Zebra / Symbol SSI (packets with two's-complement checksum,
#                 DECODE_DATA ACK/NAK, multi-packet data)
#   newland.py    Newland engines (~ SOH 0000 # ... ; ETX commands)
#   framing.py    what they share: events, counters, the suffix / idle-gap framer
#   engine.py     the async driver every application uses (open_engine, connect)
#
# The byte formats and their sources are in each module's header and in
# docs/scanner.md. simulator/scan_engine_sim.py serves byte-accurate
# simulated engines of every family.

from drivers.scanner.engine import (  # noqa: F401
    FAMILIES,
    ScanEngine,
    ScannerError,
    connect,
    make_parser,
    open_engine,
)
