"""Demo and test models, built locally (no downloads): scikit-learn's bundled data + skl2onnx,
or the `onnx` helper API. Used by `seed_demo`, the tests and the benchmarks."""

from itertools import pairwise

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def iris_classifier() -> bytes:
    """Logistic regression on iris: outputs `label` (string) and `probabilities` (FP32 [N, 3])."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    labels = np.array(data.target_names)[data.target]
    model = LogisticRegression(max_iter=500).fit(data.data.astype(np.float32), labels)
    onx = to_onnx(
        model,
        data.data[:1].astype(np.float32),
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return _renamed(
        onx, inputs={"X": "input"}, outputs={"output_label": "label", "output_probability": "probabilities"}
    )


def diabetes_regressor() -> bytes:
    """Linear regression on the diabetes data: 10 features -> `variable` FP32 [N, 1]."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    data = load_diabetes()
    model = Ridge(alpha=0.1).fit(data.data.astype(np.float32), data.target)
    onx = to_onnx(model, data.data[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    return _renamed(onx, inputs={"X": "input"}, outputs={})


def diabetes_forest(trees: int = 100) -> bytes:
    """A 100-tree random forest on the diabetes data (the benchmark's tabular model)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    data = load_diabetes()
    model = RandomForestRegressor(n_estimators=trees, max_depth=8, random_state=0).fit(
        data.data.astype(np.float32), data.target
    )
    onx = to_onnx(model, data.data[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    return _renamed(onx, inputs={"X": "input"}, outputs={})


def dense_mlp(sizes: tuple[int, ...] = (256, 1024, 1024, 10), seed: int = 0) -> bytes:
    """A dense ReLU MLP built with the onnx helper API: input FP32 [N, 256] -> `logits` [N, 10]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "input"
    for layer, (fan_in, fan_out) in enumerate(pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = np.zeros(fan_out, dtype=np.float32)
        inits += [numpy_helper.from_array(weight, f"W{layer}"), numpy_helper.from_array(bias, f"B{layer}")]
        out = "logits" if layer == len(sizes) - 2 else f"h{layer}"
        gemm_out = out if out == "logits" else f"g{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"W{layer}", f"B{layer}"], [gemm_out]))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "dense_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", sizes[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelmeter-demo")
    model.ir_version = 8
    return model.SerializeToString()


def _renamed(model: onnx.ModelProto, *, inputs: dict[str, str], outputs: dict[str, str]) -> bytes:
    """Friendlier tensor names than skl2onnx's defaults."""
    mapping = {**inputs, **outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = mapping.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
    return model.SerializeToString()


def digits_mlp(hidden: tuple[int, ...] = (512, 256), golden_rows: int = 128) -> bytes:
    """An MLP classifier on scikit-learn's bundled 8x8 digits: input FP32 [N, 64] (pixels 0-16) ->
    `label` INT64 [N] and `probabilities` FP32 [N, 10]. MatMul-based, so dynamic int8 quantisation
    applies. `golden_rows` held-out images ride along in the model's metadata
    (`modelmeter.golden_inputs`), so edge bundles check parity on real digits, not on noise."""
    import json

    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    data = load_digits()
    features = data.data.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(features))
    held_out, train = order[:golden_rows], order[golden_rows:]
    model = MLPClassifier(hidden_layer_sizes=hidden, max_iter=300, random_state=0)
    model.fit(features[train], data.target[train])
    onx = to_onnx(model, features[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    golden = {"input": features[held_out].astype(int).tolist()}
    onnx.helper.set_model_props(onx, {"modelmeter.golden_inputs": json.dumps(golden, separators=(",", ":"))})
    return _renamed(onx, inputs={"X": "input"}, outputs={"label": "label", "probabilities": "probabilities"})
