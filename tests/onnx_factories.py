"""Small hand-built ONNX models for edge cases (onnx helper API; nothing downloaded)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _model(graph, opset: int = 17, domains: dict[str, int] | None = None) -> bytes:
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tests")
    model.ir_version = 8
    return model.SerializeToString()


def two_inputs() -> bytes:
    """sum = a (FP32 [N, 2]) + b (FP32 [N, 2]); also `count` (INT64 [N, 1]) passes through."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Identity", ["count"], ["count_out"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("count_out", TensorProto.INT64, ["N", 1]),
        ],
    )
    return _model(graph)


def foreign_domain() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.example.custom")],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    return _model(graph, domains={"com.example.custom": 1})


def external_data() -> bytes:
    weight = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [weight],
    )
    return _model(graph)


def checker_failure() -> bytes:
    """A node reading a tensor nobody produces: onnx.checker refuses it."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "ghost"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    return _model(graph)


def fails_at_run_time() -> bytes:
    """Passes onnx.checker, but Reshape to [3] cannot hold a [N, 2] input: ORT fails on a sample."""
    shape = numpy_helper.from_array(np.array([3], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "runtime_failure",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [shape],
    )
    return _model(graph)


def sequence_output() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)],
    )
    return _model(graph)


def bool_and_int8() -> bytes:
    """flag (BOOL [N, 1]) and small (INT8 [N, 1]) pass straight through."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["flag"], ["flag_out"]), helper.make_node("Identity", ["small"], ["small_out"])],
        "types",
        [
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N", 1]),
            helper.make_tensor_value_info("small", TensorProto.INT8, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("flag_out", TensorProto.BOOL, ["N", 1]),
            helper.make_tensor_value_info("small_out", TensorProto.INT8, ["N", 1]),
        ],
    )
    return _model(graph)


def op_type_not_utf8() -> bytes:
    """A node whose op_type bytes are not UTF-8 (a corrupted file): onnx.checker raises UnicodeDecodeError."""
    graph = helper.make_graph(
        [helper.make_node("QQQQ", ["x"], ["y"])],
        "corrupt_text",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    return _model(graph).replace(b"QQQQ", b"\xff\xfe\xfd\xfc")


def unknown_tensor_type() -> bytes:
    """An initializer of data type 98, which ONNX does not define: onnx.checker raises ValueError."""
    weight = numpy_helper.from_array(np.ones((2,), dtype=np.float32), "W")
    weight.data_type = 98
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "corrupt_type",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [weight],
    )
    return _model(graph)


def string_pairs() -> bytes:
    """pair_out = pair (STRING [N, 2]): a string output with more than one value per row."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pair"], ["pair_out"])],
        "string_pairs",
        [helper.make_tensor_value_info("pair", TensorProto.STRING, ["N", 2])],
        [helper.make_tensor_value_info("pair_out", TensorProto.STRING, ["N", 2])],
    )
    return _model(graph)


def string_column() -> bytes:
    """text_out = text (STRING [N]): one string per row, so a row of `:predict` is a lone value."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["text_out"])],
        "string_column",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("text_out", TensorProto.STRING, ["N"])],
    )
    return _model(graph)


def rows_and_total() -> bytes:
    """same = x (FP32 [N, 2]) and total = the sum of every x (FP32 scalar): one output per row, one not."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"]), helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
        "rows_and_total",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor_value_info("same", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, []),
        ],
    )
    return _model(graph)


def fixed_rows() -> bytes:
    """same = x (FP32 [3, 2]): a model exported with a fixed batch of 3."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["same"])],
        "fixed_rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, [3, 2])],
    )
    return _model(graph)


def embedding_lookup() -> bytes:
    """vector = table[ids] (Gather on a 10 x 3 table): ids (INT64 [N, 2]) past 9 make ONNX Runtime refuse
    the call (INVALID_ARGUMENT), which no signature check can foresee."""
    table = numpy_helper.from_array(np.arange(30, dtype=np.float32).reshape(10, 3), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vector"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 2])],
        [helper.make_tensor_value_info("vector", TensorProto.FLOAT, ["N", 2, 3])],
        [table],
    )
    return _model(graph)


def fails_past_two_rows() -> bytes:
    """y = x + table, a [2, 2] table: broadcasts for 1 or 2 rows (the validation samples), but ONNX Runtime
    fails (FAIL, not INVALID_ARGUMENT) on 3 rows, which the [N, 2] signature allows."""
    table = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "table"], ["y"])],
        "two_rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [table],
    )
    return _model(graph)


def scalar() -> bytes:
    """y = -x on a rank-0 FP32 tensor: no row dimension at all (served as one value)."""
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    return _model(graph)


def bfloat16_input() -> bytes:
    """A BFLOAT16 input (valid ONNX, no OIP datatype we serve), cast to FP32."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    return _model(graph)


def fixed_two_rows() -> bytes:
    """y = relu(x) on exactly 2 rows (FP32 [2, 3]): a fixed first dimension other than 1."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed_two_rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return _model(graph)


def zero_width() -> bytes:
    """y = x on FP32 [N, 0]: rows with no values."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "zero_width",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 0])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 0])],
    )
    return _model(graph)


def conv_dynamic_height_width() -> bytes:
    """A 3x3 convolution on FP32 [N, 1, H, W] with H and W dynamic, as an image model exported with dynamic
    axes: it runs on any image of at least 3x3, not on the 1x1 a 'dynamic means 1' sample would be."""
    weights = numpy_helper.from_array(np.ones((2, 1, 3, 3), dtype=np.float32), "weights")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weights"], ["features"])],
        "conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2, "H2", "W2"])],
        [weights],
    )
    return _model(graph)


def numbers_as_text() -> bytes:
    """value = float(text) (Cast STRING -> FLOAT on [N, 1]): any numeric string runs, other text fails."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["text"], ["value"], to=TensorProto.FLOAT)],
        "numbers_as_text",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N", 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])],
    )
    return _model(graph)


def integer_ratio() -> bytes:
    """ratio = total // count on INT64 [N, 1]: any non-zero count runs; 0 fails (integer division by zero)."""
    graph = helper.make_graph(
        [helper.make_node("Div", ["total", "count"], ["ratio"])],
        "integer_ratio",
        [
            helper.make_tensor_value_info("total", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["N", 1]),
        ],
        [helper.make_tensor_value_info("ratio", TensorProto.INT64, ["N", 1])],
    )
    return _model(graph)


def doubled_column() -> bytes:
    """doubled = 2 * x on FP32 [N]: one number per row, a one-column CSV."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["doubled"])],
        "doubled_column",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["N"])],
    )
    return _model(graph)
