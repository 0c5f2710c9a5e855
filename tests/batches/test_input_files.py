"""What an input file may look like: byte order marks, custom_ids in error lines, line sizes, file types."""

import gzip
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

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


def test_it_keeps_a_valid_custom_id_in_the_errors_of_a_bad_jsonl_line(api, diabetes, in_process):
    lines = jsonl(20).splitlines()
    lines[3] = b'{"custom_id": "w", "instances": [[0, 0, 0, 0, 0, 0, 0, 0, 0]]}'  # 9 features, not 10
    lines[5] = b'{"custom_id": 7, "instances": [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]}'
    batch = run(create(api, upload(api, b"\n".join(lines) + b"\n")["id"])["id"])
    assert (batch.status, batch.failed) == ("completed", 2)
    errors = json_lines(content(api, batch.error_file.uid))
    assert [(e["line"], e["custom_id"], e["error"]["code"]) for e in errors] == [
        (4, "w", "invalid_input"),
        (6, None, "invalid_custom_id"),
    ]
    reported = api.get(f"/v1/batches/{batch.uid}").json()["errors"]["data"]
    assert [(e["line"], e["custom_id"]) for e in reported] == [(4, "w"), (6, None)]


def test_it_keeps_a_csv_rows_custom_id_and_names_unnamed_rows_by_line(api, diabetes, in_process):
    named = csv_text(20).splitlines()
    named[3] = b"bad,abc" + b",0" * 9
    unnamed = csv_text(20, custom_id=False).splitlines()
    unnamed[3] = b"abc" + b",0" * 9
    for data, custom_id in [(named, "bad"), (unnamed, "line-4")]:
        batch = run(create(api, upload(api, b"\n".join(data) + b"\n", "rows.csv")["id"])["id"])
        (error,) = json_lines(content(api, batch.error_file.uid))
        assert (error["line"], error["custom_id"], error["error"]["code"]) == (4, custom_id, "invalid_value")
        (reported,) = api.get(f"/v1/batches/{batch.uid}").json()["errors"]["data"]
        assert reported["custom_id"] == custom_id


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("rows.jsonl.gz", gzip.compress(jsonl(2))),
        ("rows.xlsx", b"PK\x03\x04" + b"\0" * 100),
        ("rows.parquet", b"PAR1" + b"\0" * 100),
        ("rows.csv", gzip.compress(csv_text(2))),  # the extension says CSV, the bytes say gzip
    ],
)
def test_it_refuses_file_types_it_cannot_read_at_upload(api, name, data):
    response = api.post("/v1/files", {"file": SimpleUploadedFile(name, data), "purpose": "batch"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_file_type", "file")
    assert ".jsonl" in error["message"] and ".csv" in error["message"]


def test_it_sniffs_files_without_an_extension(api):
    assert upload(api, jsonl(1), "rows")["format"] == "jsonl"
    assert upload(api, csv_text(1), "rows")["format"] == "csv"


def test_it_tells_a_batch_line_with_too_many_rows_to_split_the_line(api, diabetes, in_process, settings):
    lines = jsonl(20).splitlines()
    too_many = settings.INFERENCE_MAX_ROWS + 1
    lines[2] = json.dumps({"custom_id": "big", "instances": [[0.0] * 10] * too_many}).encode()
    batch = run(create(api, upload(api, b"\n".join(lines) + b"\n")["id"])["id"])
    (error,) = json_lines(content(api, batch.error_file.uid))
    assert (error["custom_id"], error["error"]["code"]) == ("big", "too_many_rows")
    assert error["error"]["message"] == (
        f"The line has {too_many} rows; at most {settings.INFERENCE_MAX_ROWS} rows per line: split the line."
    )


def test_it_stores_a_file_whose_name_is_long_in_utf8_bytes(api):
    """100 CJK characters are 300 bytes: past a file system's 255-byte limit on one name (was a 500)."""
    name = "日" * 100 + ".jsonl"
    file = upload(api, jsonl(2), name)
    assert (file["filename"], file["format"]) == (name, "jsonl")
    assert content(api, file["id"]) == jsonl(2)


def test_it_names_a_file_whose_name_has_no_usable_character_input(api):
    """A name of symbols only sanitises to nothing; it was a 400 'malformed request'."""
    file = upload(api, jsonl(1), "$$$")
    assert (file["filename"], file["format"]) == ("input", "jsonl")
    assert content(api, file["id"]) == jsonl(1)


def test_it_fails_only_the_csv_row_holding_a_stray_carriage_return(api, diabetes, in_process):
    """The csv module refuses a lone CR inside a row; that row is bad, the batch is not (it crashed)."""
    lines = csv_text(20).splitlines()
    lines[5] = lines[5].replace(b",", b"\r,", 1)
    batch = run(create(api, upload(api, b"\n".join(lines) + b"\n", "rows.csv")["id"])["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 19, 1), batch.errors
    [error] = json_lines(content(api, batch.error_file.uid))
    assert (error["line"], error["custom_id"], error["error"]["code"]) == (6, None, "invalid_csv")


def test_it_names_a_csv_file_with_old_mac_line_endings_as_such(api, diabetes, in_process):
    batch = run(create(api, upload(api, csv_text(3).replace(b"\n", b"\r"), "rows.csv")["id"])["id"])
    assert batch.status == "failed"
    [error] = batch.errors
    assert (error["code"], error["line"]) == ("invalid_header", 1)
    assert "line break" in error["message"]


def test_it_holds_csv_custom_ids_to_the_same_512_characters_as_jsonl(api, diabetes, in_process):
    lines = csv_text(20).splitlines()
    lines[3] = b"x" * 513 + lines[3][lines[3].index(b",") :]
    batch = run(create(api, upload(api, b"\n".join(lines) + b"\n", "rows.csv")["id"])["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 19, 1), batch.errors
    [error] = json_lines(content(api, batch.error_file.uid))
    assert (error["line"], error["custom_id"], error["error"]["code"]) == (4, None, "invalid_custom_id")


def test_it_accepts_a_file_whose_first_4_kib_are_blank_lines(api, diabetes, in_process):
    """Blank lines are not requests, wherever they are; the upload read 4 KiB and called the file empty."""
    data = b"\n" * 5000 + jsonl(2)
    file = upload(api, data, "rows.txt")
    assert (file["format"], file["bytes"]) == ("jsonl", len(data))
    batch = run(create(api, file["id"])["id"])
    assert (batch.status, batch.completed) == ("completed", 2), batch.errors


def test_it_reports_a_bad_line_whose_custom_id_holds_a_nul_character(api, diabetes, in_process):
    """JSON allows "\\u0000" in a string, PostgreSQL's jsonb does not: storing the line's error crashed
    the validation, and one bad line failed the whole batch with `validation_error`."""
    lines = jsonl(20).splitlines()
    lines[2] = json.dumps({"custom_id": "a\u0000b", "instances": [[0] * 9]}).encode()
    batch = run(create(api, upload(api, b"\n".join(lines) + b"\n")["id"])["id"])
    assert (batch.status, batch.completed, batch.failed) == ("completed", 19, 1), batch.errors
    [error] = json_lines(content(api, batch.error_file.uid))
    assert (error["line"], error["custom_id"], error["error"]["code"]) == (3, "a\u0000b", "invalid_input")
    reported = api.get(f"/v1/batches/{batch.uid}").json()["errors"]["data"]
    assert [(e["line"], e["custom_id"]) for e in reported] == [(3, "ab")]


@pytest.mark.parametrize(
    ("header", "row"),
    [
        (b"custom_id," + b",".join(b"input_%d" % i for i in range(10)), b"a\x00b," + b",".join([b"0"] * 10)),
        (b"custom_id,input\x00," + b",".join(b"input_%d" % i for i in range(10)), b"a,0," + b",".join([b"0"] * 10)),
    ],
    ids=["twice-used-custom-id", "column-name"],
)
def test_it_fails_a_batch_with_its_own_reason_when_that_names_a_nul_character(api, diabetes, in_process, header, row):
    batch = run(create(api, upload(api, header + b"\n" + row + b"\n" + row + b"\n", "rows.csv")["id"])["id"])
    assert batch.status == "failed"
    assert batch.errors[0]["code"] in ("duplicate_custom_id", "unknown_column"), batch.errors
    assert "\x00" not in json.dumps(batch.errors)


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("rows.csv", jsonl(2), "name a JSONL file .jsonl"),
        ("rows.json", json.dumps([{"custom_id": "a", "instances": [[0] * 10]}]).encode(), "not an array"),
        ("rows.jsonl", b'\n[\n  {"custom_id": "a", "instances": [[0]]}\n]\n', "not an array"),
        ("rows.txt", b'[{"custom_id": "a", "instances": [[0]]}]', "not an array"),
    ],
)
def test_it_refuses_a_file_that_is_not_what_its_name_says_at_upload(api, name, data, said):
    """Such a file was stored, and the batch made of it failed only after validation, naming a CSV
    column '{"custom_id": "req-0"' or every line as not a JSON object."""
    response = api.post("/v1/files", {"file": SimpleUploadedFile(name, data), "purpose": "batch"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_file_type", "file")
    assert said in error["message"]
