"""
What goes into a cell of an output table (CLI CSV/JSONL, the Space's download), torch-free:

- `printable_path`: any file name a filesystem allows, as valid UTF-8 text. POSIX names are bytes; Python decodes the
  bytes that are not UTF-8 to lone surrogates (`os.fsdecode`'s "surrogateescape"), which no UTF-8 writer accepts.
  Each such byte is written as `\\xNN` (Python's "backslashreplace" of the name's bytes: `b"\\xff\\xfe.wav"` ->
  `"\\xff\\xfe.wav"`, the spelling of Python's own repr); `original_path` turns it back into the bytes' name. Names that
  are valid UTF-8 are written as they are.
- `neutralise_cell`: a text cell that a spreadsheet would run as a formula (one starting with =, +, -, @, a tab or
  a carriage return) is prefixed with a single quote, as OWASP's "CSV Injection" page describes, so that Excel,
  LibreOffice and Google Sheets show it as text. Numbers are left alone (a MOS is never negative).
"""

import os
import re

# OWASP, "CSV Injection": cells beginning with these characters are interpreted as formulas.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def printable_path(path: str | bytes | os.PathLike) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 become `\\xNN` (see the module docstring)."""
    name = os.fsencode(path) if not isinstance(path, bytes) else path
    return name.decode("utf-8", errors="backslashreplace")


def original_path(printed: str) -> str:
    """
    The inverse of `printable_path` for a name that had undecodable bytes: `\\xNN` back to the byte, as `os.fsdecode`
    gives it (a str with surrogates, which `open` and the decoders accept). A name without `\\x` is returned as it is.
    """
    if "\\x" not in printed:
        return printed
    return os.fsdecode(re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), printed.encode("utf-8")))


def neutralise_cell(value):
    """`value`, or, for text a spreadsheet would execute (`FORMULA_PREFIXES`), the same text after a single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralise_row(row: dict) -> dict:
    """A row (column -> value) with every cell through `neutralise_cell`."""
    return {column: neutralise_cell(value) for column, value in row.items()}
