"""JSONL and CSV parsing: good records, and an error record for each kind of bad line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adapters._lines import LineBlock, LineSplitter
from adapters.base import ERROR_CODES, RawRecord, SourceError
from adapters.parsing import CsvParser, JsonlParser, make_parser


def block_of(data: bytes, limit: int = 1000, offset: int = 0) -> LineBlock:
    splitter = LineSplitter(limit, offset=offset)
    splitter.feed(data)
    splitter.finish()
    block = splitter.take(10_000)
    assert block is not None
    return block


def parse(parser: JsonlParser | CsvParser, data: bytes, **kwargs: int) -> list[RawRecord]:
    block = block_of(data, **kwargs)
    return parser.parse(block, [f"k{start}" for start in block.starts])


def by_error(records: list[RawRecord]) -> list[str | None]:
    return [record.error for record in records]


class TestJsonl:
    def test_objects_are_parsed_with_their_types(self) -> None:
        (record,) = parse(JsonlParser(1000), b'{"port": 22, "ok": true, "ratio": 0.5, "s": "x"}\n')
        assert record.fields == {"port": 22, "ok": True, "ratio": 0.5, "s": "x"}
        assert record.error is None and record.detail is None
        assert record.raw == '{"port": 22, "ok": true, "ratio": 0.5, "s": "x"}'
        assert record.offset_key == "k0"

    def test_each_kind_of_bad_line_becomes_an_error_record(self) -> None:
        data = b'{"a": 1}\nnot json\n[1, 2]\n"text"\n{"b": \xff}\n' + b"x" * 50 + b"\n{}\n"
        records = parse(JsonlParser(40), data, limit=40)
        assert by_error(records) == [
            None,
            "not_json",
            "not_object",
            "not_object",
            "decode",
            "oversize",
            None,
        ]
        assert set(by_error(records)) - {None} <= ERROR_CODES
        for record in records[1:-1]:
            assert record.fields is None
            assert record.detail and "\n" not in record.detail
        assert records[4].raw == '{"b": \\xff}'
        assert "0xff" in (records[4].detail or "")
        assert "50 bytes" in (records[5].detail or "")
        assert records[5].raw == "x" * 50

    def test_empty_lines_are_skipped_but_keep_offsets_of_the_others(self) -> None:
        records = parse(JsonlParser(1000), b'\n{"a": 1}\n\r\n{"a": 2}\n')
        assert [r.fields for r in records] == [{"a": 1}, {"a": 2}]
        assert [r.offset_key for r in records] == ["k1", "k12"]

    def test_crlf_line_endings_and_a_leading_bom_are_dropped(self) -> None:
        records = parse(JsonlParser(1000), b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
        assert [r.raw for r in records] == ['{"a": 1}', '{"a": 2}']
        assert [r.fields for r in records] == [{"a": 1}, {"a": 2}]

    def test_bom_is_only_dropped_at_the_start_of_the_stream(self) -> None:
        (record,) = parse(JsonlParser(1000), b'\xef\xbb\xbf{"a": 1}\n', offset=10)
        assert record.error == "not_json"

    def test_a_bad_line_does_not_change_the_order_of_records(self) -> None:
        data = b'{"i": 0}\n{"i": \xfe}\n{"i": 2}\n' + b"y" * 99 + b'\n{"i": 4}\n'
        records = parse(JsonlParser(50), data, limit=50)
        assert by_error(records) == [None, "decode", None, "oversize", None]
        assert [r.fields["i"] for r in records if r.fields] == [0, 2, 4]


COLUMNS = ["duration", "protocol", "note"]

# Whitespace to str.isspace, and line boundaries to str.splitlines (U+2028, U+0085, \x1c-\x1e),
# yet not a line ending in a file of records: lines made of them must be accounted for.
INVISIBLE = ["\x1c", "\x1d", "\x1e", "\x1f", "\x0b", "\x0c", "\x85", "\xa0", "\u2028",
             "\u3000", " ", "\t", " \u2028\x1c\t"]


def jsonl_parser() -> JsonlParser:
    return JsonlParser(1000)


def csv_parser(columns: list[str] = COLUMNS) -> CsvParser:
    return CsvParser(columns=columns, header=False, delimiter=",", max_record_bytes=1000)


def good_line(parser: JsonlParser | CsvParser) -> bytes:
    """A valid record in the parser's format, one or three cells for CSV."""
    if isinstance(parser, JsonlParser):
        return b'{"duration": 1}'
    return b"1,tcp,x" if parser.columns == COLUMNS else b"x"


@pytest.mark.parametrize("make", [jsonl_parser, csv_parser, lambda: csv_parser(["only"])],
                         ids=["jsonl", "csv", "csv-one-column"])
class TestInvisibleLines:
    @pytest.mark.parametrize("text", INVISIBLE, ids=[f"U+{ord(t[0]):04X}" for t in INVISIBLE])
    def test_a_line_of_whitespace_is_a_blank_error_record(
        self, make: Callable[[], JsonlParser | CsvParser], text: str
    ) -> None:
        parser = make()
        good = good_line(parser)
        records = parse(parser, good + b"\n" + text.encode() + b"\n\n\r\n" + good + b"\n")
        assert by_error(records) == [None, "blank", None]
        blank = records[1]
        assert blank.fields is None and blank.raw == text
        assert blank.offset_key == f"k{len(good) + 1}"
        assert blank.detail and f"U+{ord(text[0]):04X}" in blank.detail and "\n" not in blank.detail
        assert "blank" in ERROR_CODES

    def test_separators_inside_a_record_do_not_split_it(
        self, make: Callable[[], JsonlParser | CsvParser]
    ) -> None:
        parser = make()
        inner = "a\u2028b\x85c\x1cd\x1ee\x1ff"
        if isinstance(parser, JsonlParser):  # JSON strings hold control characters escaped only
            inner = "a\u2028b\x85c"
            data = f'{{"note": "{inner}"}}\n{{"note": "g"}}\n'
        elif parser.columns == COLUMNS:
            data = f"1,tcp,{inner}\n2,udp,g\n"
        else:
            data = f"{inner}\ng\n"
        records = parse(parser, data.encode())
        assert by_error(records) == [None, None]
        assert records[0].fields is not None and inner in records[0].fields.values()


class TestCsv:
    def test_header_names_the_cells_and_is_not_a_record(self) -> None:
        parser = CsvParser(columns=None, header=True, delimiter=",", max_record_bytes=1000)
        records = parse(parser, b"duration,protocol,note\n0,tcp,x\n")
        assert [r.fields for r in records] == [{"duration": "0", "protocol": "tcp", "note": "x"}]
        assert parser.columns == COLUMNS
        assert records[0].offset_key == "k23"

    def test_columns_name_the_cells_of_a_headerless_file(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=1000)
        records = parse(parser, b"0,tcp,x\n1,udp,y\n")
        assert [r.fields["protocol"] for r in records if r.fields] == ["tcp", "udp"]

    def test_columns_rename_a_header_that_is_still_skipped(self) -> None:
        parser = CsvParser(
            columns=["a", "b", "c"], header=True, delimiter=",", max_record_bytes=1000
        )
        records = parse(parser, b"duration,protocol,note\n0,tcp,x\n")
        assert [r.fields for r in records] == [{"a": "0", "b": "tcp", "c": "x"}]

    def test_quoted_delimiters_and_quotes_stay_inside_their_cell(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=1000)
        (record,) = parse(parser, b'0,"tcp, udp","say ""hi"""\n')
        assert record.fields == {"duration": "0", "protocol": "tcp, udp", "note": 'say "hi"'}

    def test_wrong_cell_count_is_an_error_record(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=1000)
        records = parse(parser, b"0,tcp\n0,tcp,x,extra\n0,tcp,x\n")
        assert by_error(records) == ["csv_columns", "csv_columns", None]
        assert records[0].detail == "expected 3 cells, got 2"
        assert records[1].raw == "0,tcp,x,extra"

    def test_an_open_quote_does_not_swallow_the_following_lines(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=1000)
        records = parse(parser, b'0,tcp,x\n1,"udp,y\n2,icmp,z\n3,tcp,w\n')
        assert [r.offset_key for r in records] == ["k0", "k8", "k17", "k26"]
        assert by_error(records) == [None, "csv_columns", None, None]
        assert [r.fields["duration"] for r in records if r.fields] == ["0", "2", "3"]

    def test_a_line_the_csv_module_rejects_becomes_an_error_record(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=1000)
        records = parse(parser, b"0,tcp,x\n1,u\rdp,y\n2,icmp,z\n")
        assert by_error(records) == [None, "csv_columns", None]
        assert "not CSV" in (records[1].detail or "")

    def test_undecodable_and_oversize_rows_are_error_records(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=",", max_record_bytes=30)
        data = b"0,tcp,\xff\n" + b"1,tcp," + b"z" * 40 + b"\n2,udp,ok\n"
        records = parse(parser, data, limit=30)
        assert by_error(records) == ["decode", "oversize", None]

    def test_other_delimiters_work(self) -> None:
        parser = CsvParser(columns=COLUMNS, header=False, delimiter=";", max_record_bytes=1000)
        (record,) = parse(parser, b"0;tcp;a,b\n")
        assert record.fields == {"duration": "0", "protocol": "tcp", "note": "a,b"}

    def test_header_with_duplicate_names_is_a_source_error(self) -> None:
        parser = CsvParser(columns=None, header=True, delimiter=",", max_record_bytes=1000)
        with pytest.raises(SourceError, match="more than once"):
            parse(parser, b"a,b,a\n1,2,3\n")

    def test_oversize_header_is_a_source_error(self) -> None:
        parser = CsvParser(columns=None, header=True, delimiter=",", max_record_bytes=10)
        with pytest.raises(SourceError, match="max_record_bytes"):
            parse(parser, b"a" * 20 + b"\n1\n", limit=10)

    def test_header_with_bom_and_crlf_is_read_cleanly(self) -> None:
        parser = CsvParser(columns=None, header=True, delimiter=",", max_record_bytes=1000)
        (record,) = parse(parser, b"\xef\xbb\xbfa,b\r\n1,2\r\n")
        assert record.fields == {"a": "1", "b": "2"}
        assert record.raw == "1,2"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"columns": None, "header": False}, "needs columns"),
            ({"columns": [], "header": False}, "at least one"),
            ({"columns": ["a", "a"], "header": False}, "unique"),
            ({"columns": ["a"], "header": False, "delimiter": ",,"}, "delimiter"),
            ({"columns": ["a"], "header": False, "delimiter": '"'}, "delimiter"),
        ],
    )
    def test_bad_settings_are_rejected(self, kwargs: dict[str, object], message: str) -> None:
        settings: dict[str, object] = {"delimiter": ",", "max_record_bytes": 10} | kwargs
        with pytest.raises(ValueError, match=message):
            CsvParser(**settings)  # type: ignore[arg-type]


def test_make_parser_names_the_valid_formats() -> None:
    assert isinstance(
        make_parser("csv", columns=["a"], header=False, delimiter=",", max_record_bytes=10),
        CsvParser,
    )
    with pytest.raises(ValueError, match=r"\['jsonl', 'csv'\]"):
        make_parser("xml", columns=None, header=True, delimiter=",", max_record_bytes=10)
