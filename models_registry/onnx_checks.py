"""Static checks and normalisation of uploaded ONNX files (uses `onnx`, never `onnxruntime`)."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from inference.datatypes import ONNX_TO_OIP

STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}


class ModelRejected(Exception):
    """The file cannot become a servable version; the message is shown to the uploader."""


@dataclass
class Inspection:
    content: bytes
    opset: int | None
    producer: str
    signature: dict[str, list[dict[str, Any]]]
    labels: list[Any] | None = field(default=None)


def parse(content: bytes) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(content)
    except (DecodeError, ValueError) as exc:
        raise ModelRejected(f"Not an ONNX model: {exc}") from None
    if not model.HasField("graph"):
        raise ModelRejected("Not an ONNX model: it has no graph.")
    return model


def dedupe_opsets(model: ModelProto) -> None:
    """skl2onnx writes the default-domain opset twice; keep one entry per domain (the highest)."""
    best: dict[str, int] = {}
    for entry in model.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        best[domain] = max(best.get(domain, 0), entry.version)
    if len(best) != len(model.opset_import):
        del model.opset_import[:]
        for domain, version in best.items():
            model.opset_import.append(onnx.helper.make_opsetid(domain, version))


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _tensors(graph: GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors


def refuse_external_data(model: ModelProto) -> None:
    for graph in _graphs(model.graph):
        for tensor in _tensors(graph):
            if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
                raise ModelRejected(f"Tensor '{tensor.name}' refers to external data; upload a self-contained model.")


def refuse_foreign_domains(model: ModelProto, allowed_extra: list[str]) -> None:
    allowed = STANDARD_DOMAINS | set(allowed_extra)
    for entry in model.opset_import:
        if entry.domain not in allowed:
            raise ModelRejected(f"Op domain '{entry.domain}' is not allowed on this server.")
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in allowed:
                raise ModelRejected(f"Node '{node.name or node.op_type}' uses op domain '{node.domain}'.")


def _text(value: str | bytes, what: str) -> str:
    """A string field as text. protobuf hands over a string field whose bytes are not UTF-8 as bytes
    (a corrupted or hand-made file): refused, since names and labels are served as JSON."""
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelRejected(f"{what} {value!r} is not UTF-8 text.") from None


def _type_name(elem_type: int) -> str:
    """ONNX's name for an element type (BFLOAT16), or its number when ONNX has none (a corrupted file)."""
    try:
        return str(TensorProto.DataType.Name(elem_type))
    except ValueError:
        return str(elem_type)


def _value_info(value: onnx.ValueInfoProto, role: str) -> dict[str, Any]:
    name = _text(value.name, f"{role} name")
    if not value.type.HasField("tensor_type"):
        raise ModelRejected(
            f"{role} '{value.name}' is not a tensor (sequences and maps cannot be served; "
            "for scikit-learn classifiers convert with options={'zipmap': False})."
        )
    tensor_type = value.type.tensor_type
    datatype = ONNX_TO_OIP.get(tensor_type.elem_type)
    if datatype is None:
        raise ModelRejected(
            f"{role} '{value.name}' has element type {_type_name(tensor_type.elem_type)}, which cannot be served "
            f"(served: {', '.join(sorted(_type_name(served) for served in ONNX_TO_OIP))})."
        )
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
    return {"name": name, "datatype": datatype, "shape": shape}


def signature_of(model: ModelProto) -> dict[str, list[dict[str, Any]]]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_value_info(v, "Input") for v in model.graph.input if v.name not in initializers]
    outputs = [_value_info(v, "Output") for v in model.graph.output]
    if not inputs or not outputs:
        raise ModelRejected("The model must have at least one input and one output.")
    return {"inputs": inputs, "outputs": outputs}


def labels_of(model: ModelProto) -> list[Any] | None:
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                return [_text(label, "One of the class labels") for label in attr.strings]
            if attr.name == "classlabels_int64s" and attr.ints:
                return list(attr.ints)
    return None


def inspect(content: bytes, *, max_bytes: int, allowed_extra_domains: list[str]) -> Inspection:
    """Normalise and statically check a model; raise ModelRejected with a readable reason."""
    try:
        return _inspect(content, max_bytes=max_bytes, allowed_extra_domains=allowed_extra_domains)
    except UnicodeDecodeError:  # a string field whose bytes are not UTF-8 (an op domain, a type...), met anywhere
        raise ModelRejected("The model holds text that is not UTF-8 (a corrupted file?).") from None


def _inspect(content: bytes, *, max_bytes: int, allowed_extra_domains: list[str]) -> Inspection:
    if len(content) > max_bytes:
        raise ModelRejected(f"The model is {len(content)} bytes, over the {max_bytes}-byte cap.")
    model = parse(content)
    dedupe_opsets(model)
    refuse_external_data(model)
    refuse_foreign_domains(model, allowed_extra_domains)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelRejected(f"onnx.checker refused the model: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:  # a name or op type whose bytes are not UTF-8: a corrupted file
        raise ModelRejected("onnx.checker refused the model: it holds text that is not UTF-8.") from None
    except ValueError as exc:  # e.g. "Invalid tensor data type 98.": the checker's own refusals of corrupt files
        raise ModelRejected(f"onnx.checker refused the model: {str(exc).splitlines()[0]}") from None
    signature = signature_of(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    # Informational only: shown as text whatever its bytes.
    producer = " ".join(
        field.decode("utf-8", "replace") if isinstance(field, bytes) else field
        for field in (model.producer_name, model.producer_version)
    ).strip()
    return Inspection(
        content=model.SerializeToString(),
        opset=opset,
        producer=producer[:200],
        signature=signature,
        labels=labels_of(model),
    )
