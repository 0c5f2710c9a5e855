"""The JSONL fast path accepts exactly what the full `:predict` rules accept, with the same arrays."""

import json

import numpy as np
import pytest

from batches.formats import JSONLParser, LineError, RawLine, iter_lines

SIGNATURE = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}], "outputs": []}
LINES = [
    {"custom_id": "a", "instances": [[1.5, 2, -3.25]]},
    {"custom_id": "b", "instances": [[1, 2, 3], [4.0, 5.0, 6.0]]},
    {"custom_id": "c", "instances": [[1, 2]]},
    {"custom_id": "d", "instances": [[True, False, True]]},
    {"custom_id": "e", "instances": [[1e39, 0, 0]]},
    {"custom_id": "f", "instances": [[2**70, 0, 0]]},
    {"custom_id": "g", "instances": [["1", 2, 3]]},
    {"custom_id": "h", "instances": []},
    {"custom_id": "i", "instances": [[1, 2, 3]] * 5},
    {"custom_id": "j", "inputs": [[1, 2, 3]]},
    {"custom_id": "k", "instances": [[1, 2, 3]], "extra": 1},
    {"custom_id": "l", "instances": [[None, 2, 3]]},
]


def _outcome(parser, body):
    try:
        request = parser.parse(RawLine(1, 0, json.dumps(body).encode()))
    except LineError as exc:
        return exc.code, None
    return request.form, request.feeds["input"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 as FP32, line e
@pytest.mark.parametrize("body", LINES, ids=[b["custom_id"] for b in LINES])
def test_it_decides_like_the_full_rules(body):
    fast = JSONLParser(SIGNATURE, max_rows=4, nan_policy="reject")
    full = JSONLParser(SIGNATURE, max_rows=4, nan_policy="reject")
    full.fast = False
    (fast_kind, fast_array), (full_kind, full_array) = _outcome(fast, body), _outcome(full, body)
    assert fast_kind == full_kind
    if full_array is not None:
        assert fast_array.dtype == full_array.dtype
        np.testing.assert_array_equal(fast_array, full_array)


def test_it_reads_lines_and_byte_ranges():
    import io

    data = b'{"a": 1}\r\n\n{"b": 2}\nlast'
    lines = list(iter_lines(io.BytesIO(data)))
    assert [(line.number, line.offset, line.data) for line in lines] == [
        (1, 0, b'{"a": 1}'),
        (2, 10, b""),
        (3, 11, b'{"b": 2}'),
        (4, 20, b"last"),
    ]
    middle = list(iter_lines(io.BytesIO(data), offset=11, length=9, first_number=3))
    assert [(line.number, line.data) for line in middle] == [(3, b'{"b": 2}')]


def test_it_stacks_fast_path_rows_into_the_arrays_lines_parse_to():
    parser = JSONLParser(SIGNATURE, max_rows=4, nan_policy="reject")
    bodies = [LINES[0], LINES[1], {"custom_id": "z", "instances": [[7, 8.5, -9]]}]
    lines = [RawLine(n, 0, json.dumps(body).encode()) for n, body in enumerate(bodies, 1)]
    stacked = parser.rows_array([row for line in lines for row in parser.parse_rows(line)[1]])
    parsed = np.concatenate([parser.parse(line).feeds["input"] for line in lines])
    assert stacked.dtype == parsed.dtype
    np.testing.assert_array_equal(stacked, parsed)


def test_it_writes_a_group_of_output_lines_byte_for_byte_like_one_at_a_time():
    from batches.formats import Request, output_line, output_lines
    from inference.tensors import predict_response

    requests = [
        Request(3, "a", "instances", {}, 1),
        Request(4, 'b "quoted"', "instances", {}, 2),
        Request(6, "c", "inputs", {}, 1),
    ]
    outputs = {"variable": np.array([[1.5], [2.25], [3.0], [4.125]], dtype=np.float32)}
    expected, start = b"", 0
    for request in requests:
        sliced = {name: value[start : start + request.rows] for name, value in outputs.items()}
        response = predict_response(sliced, form=request.form)
        expected += output_line(batch_uid="batch_x", request=request, response=response)
        start += request.rows
    assert (
        output_lines(
            batch_uid="batch_x",
            numbers=[r.number for r in requests],
            custom_ids=[r.custom_id for r in requests],
            rows=[r.rows for r in requests],
            forms=[r.form for r in requests],
            outputs=outputs,
        )
        == expected
    )


def test_it_hashes_custom_ids_the_same_way_in_any_block():
    from batches.validation import custom_id_hashes

    ids = [f"id-{i}" for i in range(5000)] + ["é", "a" * 512, "b"]
    hashes = custom_id_hashes(ids)
    assert hashes.dtype == np.int64
    assert len(set(hashes.tolist())) == len(ids)
    assert custom_id_hashes(ids[4090:4100]).tolist() == hashes[4090:4100].tolist()
    plain, padded = custom_id_hashes(["a", "a\u0000"]).tolist()
    assert plain != padded


CSV_SIGNATURE = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1]},
        {"name": "n", "datatype": "INT64", "shape": [-1]},
    ],
    "outputs": [],
}


@pytest.mark.parametrize(
    ("x", "n"),
    [("1_000", "1"), ("1", "1_000"), ("\u0661", "1"), ("1", "\u0661"), ("1", "\uff11"), ("\u0e51.5", "1")],
    ids=["float-underscore", "int-underscore", "float-arabic-digit", "int-arabic-digit", "int-fullwidth", "thai"],
)
def test_it_refuses_a_csv_number_no_spreadsheet_writes_instead_of_reading_it_as_python_would(x, n):
    """Python's float() and int() read `1_000` as 1000 and other scripts' digits as 0-9: the batch ran on
    numbers the file never showed (a `1_000` typo predicted as one thousand)."""
    from batches.formats import CSVParser

    parser = CSVParser(CSV_SIGNATURE, max_rows=4, nan_policy="reject")
    parser.header(RawLine(1, 0, b"custom_id,x,n"))
    with pytest.raises(LineError) as refused:
        parser.parse(RawLine(2, 14, f"a,{x},{n}".encode()))
    assert refused.value.code == "invalid_value"


def test_it_still_reads_the_csv_numbers_spreadsheets_write():
    from batches.formats import CSVParser

    parser = CSVParser(CSV_SIGNATURE, max_rows=4, nan_policy="reject")
    parser.header(RawLine(1, 0, b"custom_id,x,n"))
    for x, n, expected in [(" 1.5 ", "+2", (1.5, 2)), ("-1e-3", " -7", (-0.001, -7)), (".5", "0", (0.5, 0))]:
        request = parser.parse(RawLine(2, 14, f"a,{x},{n}".encode()))
        assert (float(request.feeds["x"][0]), int(request.feeds["n"][0])) == pytest.approx(expected)
