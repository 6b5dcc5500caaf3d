"""Type and encoding detection by content; streaming decode and line splitting."""

from __future__ import annotations

import codecs

import pytest

from shared.domain.detect import (
    ChunkReader,
    FileType,
    StreamDecoder,
    detect,
    detect_encoding,
    iter_lines,
    peek,
    sniff_delimiter,
)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(("sample", "expected"), [
    (b'{"a": 1}', FileType.JSON),
    (b'  \n\t[{"a": 1}, {"a": 2}]', FileType.JSON),
    (codecs.BOM_UTF8 + b'\r\n{"a": [1, 2]}', FileType.JSON),
    (b'{\n  "pretty": true\n}\n', FileType.JSON),
    (b'{"a": 1}\n{"a": 2}\n{"a": 3}\n', FileType.JSONL),
    (b'<?xml version="1.0"?><root/>', FileType.XML),
    (b"\n<orders><order/></orders>", FileType.XML),
    (b"id,name\n1,Anna\n2,Bob\n", FileType.CSV),
    (b"just one line of prose without structure\n", FileType.TEXT),
    (b"%PDF-1.7\n%binary", FileType.BINARY),
    (b"\x89PNG\r\n\x1a\n\x00\x00", FileType.BINARY),
    (b"abc\x00def\x00\x01\x02", FileType.BINARY),
    (b"", FileType.EMPTY),
])
def test_type_is_detected_from_content(sample: bytes, expected: FileType) -> None:
    assert detect(sample).file_type is expected


@pytest.mark.parametrize(("text", "delimiter"), [
    ("a,b,c\n1,2,3\n4,5,6\n", ","),
    ("a;b;c\n1;2,5;3\n4;5,1;6\n", ";"),  # decimal commas inside, semicolon still consistent
    ("a\tb\n1\t2\n", "\t"),
    ("a|b|c\n1|2|3\n", "|"),
    ('name,note\n"Doe, Jane","said ""a,b"""\n"Roe, Rick",x\n', ","),  # quoted delimiters do not count
])
def test_delimiter_is_sniffed_quote_aware(text: str, delimiter: str) -> None:
    assert sniff_delimiter(text) == delimiter
    assert detect(text.encode()).delimiter == delimiter


def test_extension_mismatch_is_noted_but_content_wins() -> None:
    found = detect(b'{"a": 1}', "orders.csv")
    assert found.file_type is FileType.JSON
    assert found.extension_type is FileType.CSV
    assert found.notes and "suggests csv" in found.notes[0] and "json" in found.notes[0]
    assert detect(b"a,b\n1,2\n", "orders.csv").notes == ()
    assert detect(b'{"a":1}\n{"a":2}\n{"a":3}\n', "x.json").notes == ()  # JSON vs JSON Lines: compatible


@pytest.mark.parametrize(("sample", "codec", "bom", "label"), [
    ("id,name\n1,Zoë\n".encode(), "utf-8", False, "utf-8"),
    (codecs.BOM_UTF8 + "id,name\n1,Zoë\n".encode(), "utf-8-sig", True, "utf-8-sig"),
    ("id,name\n1,Zoë\n".encode("utf-16"), "utf-16", True, "utf-16"),
    ("id;price\n1;5 €;café\n".encode("cp1252"), "cp1252", False, "windows-1252"),
    ("id,name\n1,Zoë\n".encode("utf-16-le"), "utf-16-le", False, "utf-16-le"),
    ('<?xml version="1.0" encoding="ISO-8859-1"?><a>é</a>'.encode("latin-1"), "cp1252", False, "windows-1252"),
])
def test_encoding_is_detected(sample: bytes, codec: str, bom: bool, label: str) -> None:
    found = detect(sample)
    assert (found.encoding, found.bom, found.encoding_label) == (codec, bom, label)
    assert found.file_type in (FileType.CSV, FileType.XML, FileType.TEXT)


def test_cp1252_euro_and_accent_decode_correctly() -> None:
    data = "name;amount\nCafé Müller;12 €\n".encode("cp1252")
    found = detect(data)
    assert found.encoding_label == "windows-1252" and found.file_type is FileType.CSV
    assert "".join(StreamDecoder(found.encoding).blocks([data])) == "name;amount\nCafé Müller;12 €\n"


def test_declared_encoding_wins_over_guessing_but_not_over_a_bom() -> None:
    assert detect_encoding("é".encode("latin-1") * 10, "latin-1")[0] == "latin-1"
    assert detect_encoding(codecs.BOM_UTF8 + b"x", "windows-1252")[0] == "utf-8-sig"
    with pytest.raises(ValueError, match="unknown encoding"):
        detect_encoding(b"abc", "klingon")


def test_ascii_head_is_provisional_and_switches_to_cp1252_at_the_first_non_utf8_byte() -> None:
    head = b"id,name\n" + b"1,plain ascii\n" * 10
    tail = "2,Renée €\n".encode("cp1252")
    found = detect(head)
    assert found.provisional and found.encoding == "utf-8"
    decoder = StreamDecoder(found.encoding, provisional=True)
    text = "".join(decoder.blocks([head, tail]))
    assert text.endswith("2,Renée €\n")
    assert decoder.label == "windows-1252" and decoder.switched_at == len(head) + 5 and decoder.errors == 0


def test_invalid_bytes_after_real_utf8_are_counted_not_switched() -> None:
    decoder = StreamDecoder("utf-8", provisional=True)
    text = "".join(decoder.blocks(["é\n".encode(), b"ok \xff\xfe bad\n"]))
    assert text == "é\nok \ufffd\ufffd bad\n"
    assert decoder.errors == 2 and decoder.first_error_offset == 6 and decoder.label == "utf-8"


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_decoding_in_tiny_chunks_equals_decoding_whole(size: int) -> None:
    text = "a€b\r\nZoë 😀 ü\n" * 5
    for codec in ("utf-8", "utf-8-sig", "utf-16", "cp1252"):
        data = (codecs.BOM_UTF8 if codec == "utf-8-sig" else b"") + text.replace("😀", "x").encode(
            "utf-8" if codec == "utf-8-sig" else codec)
        expected = "".join(StreamDecoder(codec).blocks([data]))
        assert "".join(StreamDecoder(codec).blocks(pieces(data, size))) == expected
        assert "\ufeff" not in expected


def test_utf8_output_has_no_bom() -> None:
    data = "x,y\n1,é\n".encode("utf-16")
    assert b"".join(StreamDecoder("utf-16").utf8(pieces(data, 3))) == "x,y\n1,é\n".encode()


def test_lines_keep_their_ends_and_split_only_on_cr_lf() -> None:
    blocks = ["a,b\r", "\nc,d\re", ",f\ng\x0ch\x1ci\n", "j\u2028k\nlast"]
    assert list(iter_lines(blocks)) == ["a,b\r\n", "c,d\r", "e,f\n", "g\x0ch\x1ci\n", "j\u2028k\n", "last"]


def test_peek_keeps_every_chunk() -> None:
    chunks = [b"ab", b"", b"cde", b"fgh"]
    head, rest = peek(iter(chunks), 4)
    assert head == b"abcd"
    assert b"".join(rest) == b"abcdefgh"


def test_chunk_reader_reads_across_chunks() -> None:
    reader = ChunkReader([b"abc", b"", b"defg"])
    assert reader.read(2) == b"ab"
    assert reader.read(3) == b"cde"
    assert reader.read() == b"fg"
    assert reader.read(1) == b""
