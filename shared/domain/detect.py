"""File type and text encoding detection by content, and streaming decoding to text or UTF-8."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain
from typing import Any

SNIFF_BYTES = 64 * 1024
"""How much of the head of a file detection looks at (type from the first KB, encoding from all of it)."""

DECODE_PIECE = 256 * 1024
"""Input chunks are decoded in pieces of at most this many bytes: big enough to amortise, small enough for caches."""

MAX_LINE_CHARS = 64 * 1024 * 1024
"""A line longer than this (no line break in 64 Mi characters) is an error, not a reason for memory to grow."""


class FileType(StrEnum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    XML = "xml"
    BINARY = "binary"
    TEXT = "text"
    EMPTY = "empty"


EXTENSION_TYPES: dict[str, FileType] = {
    ".csv": FileType.CSV, ".tsv": FileType.CSV, ".psv": FileType.CSV,
    ".json": FileType.JSON, ".jsonl": FileType.JSONL, ".ndjson": FileType.JSONL,
    ".xml": FileType.XML, ".txt": FileType.TEXT,
    **{ext: FileType.BINARY for ext in (".pdf", ".zip", ".gz", ".tgz", ".7z", ".xlsx", ".xls", ".docx", ".png",
                                        ".jpg", ".jpeg", ".gif", ".pgp", ".gpg", ".bin", ".exe", ".parquet")},
}

# Leading bytes of common binary formats (PDF, ZIP/Office, gzip, PNG, JPEG, GIF, OLE2, 7z, RAR, Parquet, PGP).
_MAGIC = (b"%PDF", b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"\x89PNG", b"\xff\xd8\xff", b"GIF8",
          b"\xd0\xcf\x11\xe0", b"7z\xbc\xaf", b"Rar!", b"PAR1", b"\x85\x01", b"\x84\x8c", b"\xa8\x03PGP")
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_XML_DECL = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_CANDIDATE_DELIMITERS = (",", ";", "\t", "|")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")

# Names as reported (stable labels) for the codecs Wharf decodes with.
_LABELS = {"utf-8": "utf-8", "utf-8-sig": "utf-8-sig", "utf-16": "utf-16", "utf-16-le": "utf-16-le",
           "utf-16-be": "utf-16-be", "utf-32": "utf-32", "cp1252": "windows-1252", "latin-1": "iso-8859-1",
           "iso8859-1": "iso-8859-1", "ascii": "utf-8"}

DECLARED_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "latin-1": "latin-1", "latin1": "latin-1",
                      "iso-8859-1": "latin-1", "windows-1252": "cp1252", "cp1252": "cp1252", "utf-16": "utf-16"}


def _c1_fallback(exc: UnicodeError) -> tuple[str, int]:
    """cp1252 leaves five bytes undefined; decode them as their Latin-1 code points (as WHATWG does)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start:exc.end].decode("latin-1"), exc.end


codecs.register_error("wharf-c1", _c1_fallback)


def encoding_label(codec: str) -> str:
    """The label a report shows for a codec name ("cp1252" -> "windows-1252")."""
    name = codecs.lookup(codec).name
    return _LABELS.get(codec, _LABELS.get(name, name))


@dataclass(frozen=True)
class Detection:
    """What the head of a file looks like. `encoding` is a Python codec name usable with `StreamDecoder`."""

    file_type: FileType
    encoding: str
    bom: bool = False
    delimiter: str | None = None
    extension_type: FileType | None = None
    provisional: bool = False  # encoding guessed from ASCII-only head: a later non-UTF-8 byte may still switch it
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def encoding_label(self) -> str:
        return encoding_label(self.encoding)


def extension_type(file_name: str) -> FileType | None:
    dot = file_name.rfind(".")
    return EXTENSION_TYPES.get(file_name[dot:].lower()) if dot >= 0 else None


def detect_encoding(sample: bytes, declared: str = "auto") -> tuple[str, bool, bool]:
    """(codec, has_bom, provisional) for the head of a file.

    A BOM wins. A declared encoding other than "auto" is used as given (UTF-8 with a BOM becomes utf-8-sig).
    Otherwise: UTF-16 without BOM by its NUL pattern, an XML declaration, valid UTF-8, else windows-1252.
    """
    for bom, codec in _BOMS:
        if sample.startswith(bom):
            return codec, True, False
    declared = (declared or "auto").lower()
    if declared != "auto":
        try:
            return DECLARED_ENCODINGS.get(declared) or codecs.lookup(declared).name, False, False
        except LookupError as exc:
            raise ValueError(f"unknown encoding {declared!r}") from exc
    utf16 = _utf16_without_bom(sample)
    if utf16:
        return utf16, False, False
    match = _XML_DECL.match(sample.lstrip())
    if match:
        try:
            declared_xml = codecs.lookup(match.group(1).decode("ascii")).name
        except LookupError:
            declared_xml = ""
        if declared_xml and declared_xml not in ("utf-8", "utf-16", "utf-32"):
            return ("cp1252" if declared_xml in ("latin-1", "iso8859-1", "cp1252") else declared_xml), False, False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, False)
    except UnicodeDecodeError:
        return "cp1252", False, False
    return "utf-8", False, sample.isascii()


def _utf16_without_bom(sample: bytes) -> str | None:
    head = sample[:1024]
    if len(head) < 8:
        return None
    even, odd = head[0::2], head[1::2]
    even_nul, odd_nul = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_nul > 0.4 and even_nul < 0.05:
        return "utf-16-le"
    if even_nul > 0.4 and odd_nul < 0.05:
        return "utf-16-be"
    return None


def is_binary(sample: bytes, codec: str) -> bool:
    """Known binary magic, NUL bytes in an 8-bit/UTF-8 text, or a high share of control characters."""
    if sample.startswith(_MAGIC):
        return True
    if codec.startswith(("utf-16", "utf-32")):
        return False
    head = sample[:4096]
    if b"\x00" in head:
        return True
    text = head.decode(codec if codec != "utf-8-sig" else "utf-8", errors="replace")
    if not text:
        return False
    controls = len(_CONTROL.findall(text))
    replaced = text.count("\ufffd") if codec.startswith("utf-8") else 0
    return (controls + replaced) / len(text) > 0.1


def sniff_delimiter(text: str, candidates: Iterable[str] = _CANDIDATE_DELIMITERS, quotechar: str = '"') -> str | None:
    """The delimiter that splits the first complete lines into the same number (>1) of fields, or None.

    Quote-aware (parses with csv for each candidate). Ties go to the most fields, then to the candidates' order.
    """
    cut = max(text.rfind("\n"), text.rfind("\r"))
    if cut > 0:
        text = text[:cut + 1]
    best: tuple[int, int, str] | None = None
    for order, delim in enumerate(candidates):
        if delim not in text:
            continue
        try:
            rows = [len(r) for r in _first_rows(text, delim, quotechar, 50) if r]
        except csv.Error:
            continue
        if not rows:
            continue
        mode = max(set(rows), key=rows.count)
        if mode < 2 or rows.count(mode) < 0.8 * len(rows):
            continue
        score = (mode, -order, delim)
        if best is None or score[:2] > best[:2]:
            best = score
    return best[2] if best else None


def _first_rows(text: str, delim: str, quotechar: str, limit: int) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, quotechar=quotechar)
    return [row for _, row in zip(range(limit), reader, strict=False)]


def _looks_like_jsonl(text: str) -> bool:
    """The first line is a whole JSON value on its own and another value-like line follows.

    (A pretty-printed document's first line, "{" or "[", is not a value; a one-line document has no second line.)
    """
    lines = text.splitlines()
    if not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # possibly cut by the sample
    lines = [ln for ln in lines if ln.strip()]
    if len(lines) < 2 or not lines[1].lstrip().startswith(("{", "[")):
        return False
    try:
        json.loads(lines[0])
    except (ValueError, RecursionError):  # too deep to tell: validation reports the nesting as JSON
        return False
    return True


def detect(sample: bytes, file_name: str = "", *, encoding: str = "auto", quotechar: str = '"') -> Detection:
    """Detect type and encoding from the head of a file (use up to `SNIFF_BYTES`).

    JSON starts with `{`/`[` after BOM and whitespace (JSON Lines when its first lines are each a value), XML with
    `<`, CSV when a delimiter splits lines consistently; binary by magic bytes, NUL bytes or control characters.
    A file extension that says otherwise is noted, never trusted over the content.
    """
    ext = extension_type(file_name)
    notes: list[str] = []
    if not sample:
        return Detection(FileType.EMPTY, "utf-8", extension_type=ext)
    codec, bom, provisional = detect_encoding(sample, encoding)
    if is_binary(sample, codec):
        file_type = FileType.BINARY
        delimiter = None
    else:
        text = _decode_head(sample, codec)
        stripped = text.lstrip()
        delimiter = None
        if stripped.startswith(("{", "[")):
            file_type = FileType.JSONL if _looks_like_jsonl(stripped) else FileType.JSON
        elif stripped.startswith("<"):
            file_type = FileType.XML
        else:
            delimiter = sniff_delimiter(text[:16384], quotechar=quotechar)
            file_type = FileType.CSV if delimiter else FileType.TEXT
    if ext is not None and ext != file_type and not _compatible(ext, file_type):
        notes.append(f"extension of {file_name!r} suggests {ext.value} but the content looks like {file_type.value}")
    return Detection(file_type, codec, bom, delimiter, ext, provisional, tuple(notes))


def _compatible(ext: FileType, found: FileType) -> bool:
    pairs = {(FileType.TEXT, FileType.CSV), (FileType.CSV, FileType.TEXT), (FileType.JSON, FileType.JSONL),
             (FileType.JSONL, FileType.JSON)}
    return (ext, found) in pairs or found is FileType.EMPTY


def _decode_head(sample: bytes, codec: str) -> str:
    decoder = codecs.getincrementaldecoder(codec)(errors="replace" if codec != "cp1252" else "wharf-c1")
    return str(decoder.decode(sample, False))


class StreamDecoder:
    """Incremental decoder of a byte stream to text blocks, memory flat, never failing on bad bytes.

    Invalid sequences become U+FFFD and are counted (`errors`), so validation can report them instead of
    stopping. A `provisional` UTF-8 guess (the head was ASCII) switches to windows-1252 at the first byte that is
    not UTF-8, when everything before it was ASCII: that decodes a cp1252 file whose first accent is in row 50 000
    correctly. After real UTF-8 multi-byte text, a bad byte is an error, not a switch.
    """

    def __init__(self, codec: str, *, provisional: bool = False) -> None:
        self.codec = codec
        self.provisional = provisional
        self.errors = 0
        self.first_error_offset: int | None = None
        self.switched_at: int | None = None
        self.bytes_read = 0
        self._ascii_so_far = True
        self._decoder = self._make(codec)

    @property
    def label(self) -> str:
        return encoding_label(self.codec)

    @staticmethod
    def _make(codec: str, errors: str = "strict") -> codecs.IncrementalDecoder:
        if codec == "cp1252" and errors == "strict":
            errors = "wharf-c1"
        return codecs.getincrementaldecoder(codec)(errors=errors)

    def _decode(self, data: bytes | memoryview, final: bool = False) -> str:
        offset = self.bytes_read
        self.bytes_read += len(data)
        state = self._decoder.getstate()
        try:
            text: str = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            if self.provisional and self._ascii_so_far and self.codec == "utf-8":
                self.codec, self.provisional = "cp1252", False
                self.switched_at = offset + exc.start
                self._decoder = self._make("cp1252")
                return str(self._decoder.decode(data, final))
            self.errors += 1
            if self.first_error_offset is None:
                self.first_error_offset = offset + exc.start
            replacing = self._make(self.codec, "replace")
            replacing.setstate(state)
            text = replacing.decode(data, final)
            self.errors += max(0, text.count("\ufffd") - 1)
            self._decoder.reset()
            self._decoder.setstate(replacing.getstate())
            return text
        if self.provisional and self._ascii_so_far and not bytes(data).isascii():
            self._ascii_so_far = False
        return text

    def blocks(self, chunks: Iterable[bytes]) -> Iterator[str]:
        """Text blocks of the whole stream (the last one flushes the decoder)."""
        for chunk in chunks:
            if not chunk:
                continue
            if len(chunk) <= DECODE_PIECE:
                text = self._decode(chunk)
                if text:
                    yield text
                continue
            view = memoryview(chunk)
            for start in range(0, len(chunk), DECODE_PIECE):
                text = self._decode(view[start:start + DECODE_PIECE])
                if text:
                    yield text
        tail = self._decode(b"", True)
        if tail:
            yield tail

    def utf8(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The stream re-encoded as UTF-8 without BOM (a UTF-8 input is still checked and passes through)."""
        for text in self.blocks(chunks):
            yield text.encode("utf-8", "surrogatepass")


class LineTooLongError(ValueError):
    """No line break within MAX_LINE_CHARS characters."""


_ODD_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e")  # str.splitlines breaks there too; csv must not
_ODD_WIDE_BREAKS = (*_ODD_BREAKS, "\x85", "\u2028", "\u2029")


def _lines_of(text: str) -> Iterable[str]:
    odd = _ODD_BREAKS if text.isascii() else _ODD_WIDE_BREAKS
    for char in odd:
        if char in text:
            return io.StringIO(text, newline="")  # splits at CR, LF, CRLF only
    return text.splitlines(True)  # same result here, and faster


def _line_blocks(blocks: Iterable[str], max_line: int = MAX_LINE_CHARS) -> Iterator[Iterable[str]]:
    carry = ""
    for block in blocks:
        text = carry + block if carry else block
        cut = text.rfind("\n")
        if cut < 0:
            cut = text.rfind("\r", 0, len(text) - 1)  # old-Mac CR endings; a CR at the end may precede an LF
        if cut < 0:
            if len(text) > max_line:
                raise LineTooLongError(f"no line break within {max_line} characters")
            carry = text
            continue
        carry = text[cut + 1:]
        yield _lines_of(text[:cut + 1])
    if carry:
        yield _lines_of(carry)


def iter_lines(blocks: Iterable[str]) -> Iterator[str]:
    """Physical lines (ends kept, LF/CRLF/CR) of a text stream, as csv.reader wants them; C-speed iteration."""
    return chain.from_iterable(_line_blocks(blocks))


def peek(chunks: Iterable[bytes], size: int = SNIFF_BYTES) -> tuple[bytes, Iterator[bytes]]:
    """The first `size` bytes (fewer at end of stream) and an iterator that still yields every chunk."""
    iterator = iter(chunks)
    held: list[bytes] = []
    have = 0
    for chunk in iterator:
        if not chunk:
            continue
        held.append(chunk)
        have += len(chunk)
        if have >= size:
            break
    head = b"".join(held)[:size]
    return head, chain(held, iterator)


class ChunkReader(io.RawIOBase):
    """A read-only binary file over an iterator of chunks (for parsers that want `.read(n)`)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._buffer = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        filled = 0
        while filled < len(view):
            if self._pos >= len(self._buffer):
                try:
                    self._buffer = next(self._chunks)
                except StopIteration:
                    break
                self._pos = 0
                continue
            n = min(len(view) - filled, len(self._buffer) - self._pos)
            view[filled:filled + n] = self._buffer[self._pos:self._pos + n]
            self._pos += n
            filled += n
        return filled
