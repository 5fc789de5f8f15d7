"""Mojibake detection: UTF-8 text that was decoded with a Windows code page (cp1252 / cp1254).

The byte tables here are shared with the recovery in ``enrich.repair``.
"""

from __future__ import annotations

import re

__all__ = ["ALL_HOLES", "CHAR_TO_BYTE", "CP1252_ONLY", "CP1254_EXTRA", "RUN_RE", "looks_mojibake"]

# Bytes a Windows code page leaves undefined (and so may have dropped).
CP1252_HOLES = b"\x81\x8d\x8f\x90\x9d"
# cp1254 also lacks 8E and 9E; soft hyphens (AD) get stripped as invisible.
ALL_HOLES = CP1252_HOLES + b"\x8e\x9e\xad"
# cp1254 letters that differ from cp1252 at the same byte.
CP1254_EXTRA = {"Ğ": 0xD0, "İ": 0xDD, "Ş": 0xDE, "ğ": 0xF0, "ı": 0xFD, "ş": 0xFE}
# cp1252 letters at the bytes where cp1254 has other letters.
CP1252_ONLY = frozenset("ÐÝÞðýþ")


def _build_char_to_byte() -> dict[str, int]:
    """Map each character a cp1252/cp1254 decode can produce to its byte."""
    table: dict[str, int] = {}
    for b in range(256):
        try:
            table[bytes([b]).decode("cp1252")] = b
        except UnicodeDecodeError:
            table[chr(b)] = b  # C1 control kept by a latin-1 style decoder
    table.update(CP1254_EXTRA)
    return table


CHAR_TO_BYTE = _build_char_to_byte()
_LEAD_CHARS = "".join(sorted(c for c, b in CHAR_TO_BYTE.items() if 0xC2 <= b <= 0xF4))
_CONT_CHARS = "".join(sorted(c for c, b in CHAR_TO_BYTE.items() if 0x80 <= b <= 0xBF))
_HIT_RE = re.compile(f"[{re.escape(_LEAD_CHARS)}][{re.escape(_CONT_CHARS)}]")
_LEAD_RE = re.compile(f"[{re.escape(_LEAD_CHARS)}]")
# Runs of non-ASCII single-byte chars: ASCII never sits inside a UTF-8 sequence.
RUN_RE = re.compile(
    f"[{re.escape(''.join(c for c in CHAR_TO_BYTE if not c.isascii()))}]+"
)


# ------------------------------------------------------------------ detection


def looks_mojibake(text: str) -> bool:
    """Tell cheaply whether text looks like UTF-8 decoded as cp1252/cp1254."""
    if text.isascii() or not _HIT_RE.search(text):  # most notes: no lead+continuation pair at all
        return False
    hits = len(_HIT_RE.findall(text))
    if hits < 3:
        return False
    return hits >= 0.3 * len(_LEAD_RE.findall(text))
