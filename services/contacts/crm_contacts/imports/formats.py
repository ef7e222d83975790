"""What an import upload is: its text encoding, or an Excel workbook.

Spreadsheets from Iranian offices arrive in three shapes, and all three are taken:

- UTF-8 CSV, with or without a byte-order mark (what `Save as CSV UTF-8` writes);
- Windows-1256 CSV (what Excel on a Persian or Arabic Windows writes as plain `CSV`);
- `.xlsx` workbooks, known by their Content-Type or, whatever the Content-Type, by the zip
  signature at the start of the body.

Which encoding: a `charset` parameter in the Content-Type decides (`utf-8` or
`windows-1256`/`cp1256`). Without one, the upload is UTF-8 as long as it decodes as UTF-8;
at the first byte that does not, it is Windows-1256 if everything before that byte was
plain ASCII (so the two readings agree on it). A file that had valid non-ASCII UTF-8 and
then a broken sequence is a damaged UTF-8 file, not a Windows-1256 one: refused, as is a
Windows-1256 reading that contains control characters (binary data, or another encoding
such as UTF-16). JSON lines are UTF-8 only (RFC 8259).
"""

from __future__ import annotations

import codecs
import re
import zipfile
from typing import IO, Any

from crmkit.errors import ValidationFailed

UTF8, CP1256 = "utf-8", "cp1256"
CHARSETS = {
    "utf-8": UTF8,
    "utf8": UTF8,
    "utf-8-sig": UTF8,
    "windows-1256": CP1256,
    "cp1256": CP1256,
    "x-cp1256": CP1256,
}
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the old binary .xls (and .doc)
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def charset_of(params: dict[str, str]) -> str | None:
    """The encoding a Content-Type's `charset` names: `utf-8`, `cp1256`, another name as given
    (which `known_charset` refuses), or None when there is no charset parameter."""
    raw = params.get("charset")
    return None if raw is None else CHARSETS.get(raw.strip().lower().replace("_", "-"), raw)


def known_charset(charset: str | None) -> bool:
    return charset is None or charset in (UTF8, CP1256)


def refuse_signature(head: bytes) -> None:
    """422 for the binary formats people send instead (old .xls, UTF-16 text)."""
    if head.startswith(OLE_MAGIC):
        raise ValidationFailed(
            "old Excel (.xls) files are not accepted",
            {"_body": ["save the sheet as .xlsx or as CSV (UTF-8 or Windows-1256)"]},
        )
    if head.startswith(UTF16_BOMS):
        raise ValidationFailed(
            "UTF-16 text is not accepted", {"_body": ["save the file as CSV UTF-8 or Windows-1256 (Arabic)"]}
        )


def _not_text(encoding: str, offset: int, why: str) -> ValidationFailed:
    name = "UTF-8" if encoding == UTF8 else "Windows-1256"
    return ValidationFailed(f"the upload is not {name} text", {"_body": [f"{why} at byte {offset}"]})


class Charset:
    """Decodes an upload chunk by chunk, settling its encoding on the way (see the module)."""

    def __init__(self, declared: str | None, fallback: bool) -> None:
        self.encoding = declared or UTF8
        self._may_fall_back = declared is None and fallback
        self._decoder = codecs.getincrementaldecoder(self.encoding)("strict")
        self._non_ascii = False  # seen valid non-ASCII UTF-8: a later bad byte is damage, not cp1256
        self._offset = 0  # bytes fed so far

    def decode(self, chunk: bytes, final: bool = False) -> str:
        pending = self._decoder.getstate()[0]  # bytes of a character split across chunks
        try:
            text = self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError as exc:  # positions count from the first pending byte
            text = self._fall_back(pending + chunk, self._offset - len(pending) + exc.start, exc, final)
        self._offset += len(chunk)
        self._check(text)
        return text

    def finish(self) -> None:
        self.decode(b"", final=True)

    def _fall_back(self, data: bytes, at: int, exc: UnicodeDecodeError, final: bool) -> str:
        if not self._may_fall_back or self._non_ascii or not data[: exc.start].isascii():
            why = "ends inside a UTF-8 character" if exc.reason == "unexpected end of data" else "invalid UTF-8"
            raise _not_text(UTF8, at, why) from None
        self.encoding, self._may_fall_back = CP1256, False
        self._decoder = codecs.getincrementaldecoder(CP1256)("strict")
        return self._decoder.decode(data, final=final)

    def _check(self, text: str) -> None:
        if self.encoding == UTF8:
            self._non_ascii = self._non_ascii or not text.isascii()
        elif (bad := CONTROL.search(text)) is not None:
            raise _not_text(CP1256, self._offset - len(text) + bad.start(), "a control character")


# --- .xlsx ------------------------------------------------------------------------------------


def open_workbook(file: IO[bytes], max_unpacked: int) -> Any:
    """The workbook's first sheet, read-only (rows streamed); 422 for anything that is not one.

    A zip bomb is refused before any XML is parsed: the sizes the archive declares must add
    up to at most `max_unpacked` bytes (zipfile also stops at a member that inflates past
    its declared size).
    """
    from openpyxl import load_workbook  # only imports pay for it

    try:
        with zipfile.ZipFile(file) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if "xl/workbook.xml" not in archive.namelist():
                raise ValidationFailed(
                    "the upload is a zip archive but not an .xlsx workbook",
                    {"_body": ["no xl/workbook.xml in the archive"]},
                )
        if unpacked > max_unpacked:
            raise ValidationFailed(
                "the workbook is too large once unpacked",
                {"_body": [f"{unpacked} bytes unpacked; at most {max_unpacked}"]},
            )
        file.seek(0)
        workbook = load_workbook(file, read_only=True, data_only=True)
        return workbook.worksheets[0]
    except ValidationFailed:
        raise
    except Exception as exc:  # a hostile file can make the parser raise anything
        raise ValidationFailed(
            "the upload is not a readable .xlsx workbook", {"_body": [f"{type(exc).__name__}: {str(exc)[:200]}"]}
        ) from None


def cell_text(value: Any) -> str:
    """A cell as the text a CSV would have held: numbers without a spurious `.0`, dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
