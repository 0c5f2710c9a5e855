"""What an input file may look like: byte order marks, custom_ids in error lines, line sizes, file types."""

import io

from batches.formats import RawLine, iter_lines

from .conftest import content, create, csv_text, json_lines, jsonl, run, upload

BOM = b"\xef\xbb\xbf"


def test_it_reads_a_leading_byte_order_mark_as_nothing():
    data = BOM + b'{"a": 1}\n{"b": 2}\n'
    assert list(iter_lines(io.BytesIO(data))) == [RawLine(1, 0, b'{"a": 1}'), RawLine(2, 12, b'{"b": 2}')]
    assert list(iter_lines(io.BytesIO(data), offset=12)) == [RawLine(1, 12, b'{"b": 2}')]
    assert list(iter_lines(io.BytesIO(data), length=12)) == [RawLine(1, 0, b'{"a": 1}')]
    assert list(iter_lines(io.BytesIO(BOM))) == [RawLine(1, 0, b"")]


def test_it_runs_a_csv_saved_by_excel_with_a_byte_order_mark(api, diabetes, in_process):
    file = upload(api, BOM + csv_text(3), "rows.csv")
    assert file["format"] == "csv"
    batch = run(create(api, file["id"])["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 3, 0), batch.errors
    outputs = json_lines(content(api, batch.output_file.uid))
    assert [line["custom_id"] for line in outputs] == ["row-0", "row-1", "row-2"]


def test_it_runs_a_jsonl_file_with_a_byte_order_mark(api, diabetes, in_process):
    batch = run(create(api, upload(api, BOM + jsonl(3))["id"])["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 3, 0), batch.errors


def test_it_sniffs_the_format_of_a_txt_file_behind_a_byte_order_mark(api):
    assert upload(api, BOM + jsonl(1), "rows.txt")["format"] == "jsonl"
    assert upload(api, BOM + csv_text(1), "rows.txt")["format"] == "csv"
