"""Online inference over two faces: TF-Serving/Vertex `:predict` and the Open Inference Protocol v2.

Views only translate: parse the body, call `inference.services`, render. The ledger row is written
by `APIGatewayMiddleware` from what `usage_of(request)` is told here.
"""

from collections.abc import Iterable
from typing import Any

import orjson
from django.db import connection
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotAcceptable
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apiservice.auth import request_principal
from apiservice.errors import InvalidInput, Unavailable
from apiservice.middleware import usage_of
from apiservice.renderers import ContentNegotiation, dumps
from apiservice.schema import (
    ALIAS_PATH,
    ERROR_RESPONSES,
    IDEMPOTENCY_KEY_HEADER,
    MODEL_PATH,
    OIP_ERROR_RESPONSES,
    VERSION_PATH,
)
from billing.models import Meter
from models_registry.models import ModelVersion
from models_registry.selectors import model_get

from . import numeric_json, services
from .tensors import (
    dense_input,
    instances_of,
    oip_feeds,
    oip_outputs,
    predict_feeds,
    predict_response,
    requested_outputs,
    split_binary_body,
    to_array,
)

SERVER_NAME = "modelmeter"
SERVER_VERSION = "1.0.0"


def _json_body(request: HttpRequest) -> Any:
    raw = request.body
    if not raw:
        raise InvalidInput("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}", code="invalid_json") from None


def _organisation_id(request: HttpRequest | Request) -> int | None:
    principal = request_principal(request)
    return principal.organisation_id if principal else None


def _note_version(request: HttpRequest | Request, servable: services.Servable) -> None:
    usage = usage_of(request)
    usage.model_version_id = servable.version_id
    raw = request._request if isinstance(request, Request) else request
    raw.model_version_number = servable.number  # type: ignore[attr-defined]


def _predict_feeds(request: HttpRequest, servable: services.Servable) -> tuple[dict[str, Any], str]:
    """Rows of numbers for a model with one float input go straight to numpy when the body proves its
    shape (`inference.numeric_json`); everything else through orjson and `predict_feeds`."""
    spec = dense_input(servable.signature)
    parsed = numeric_json.predict_matrix(request.body) if spec is not None else None
    if spec is None or parsed is None:
        return predict_feeds(_json_body(request), signature=servable.signature)
    form, matrix = parsed
    name = spec["name"]
    param = f"instances.{name}" if form == "instances" else "inputs"  # as `predict_feeds` names them
    return {name: to_array(matrix, datatype=spec["datatype"], name=name, param=param)}, form


def predict(request: HttpRequest, *, model: str, ref: str | None = None, alias: str | None = None) -> HttpResponse:
    """TF-Serving / Vertex `:predict` on a plain Django request: the view below and the gateway's fast
    route (`inference.urls.fast_routes`) both serve it from here. `ref` comes from `/versions/{v}`,
    `alias` from `/labels/{alias}`; an error about it names the one the client sent."""
    usage = usage_of(request)
    usage.face = "v1-predict"
    param, ref = ("version", ref) if alias is None else ("alias", alias)
    servable = services.servable_resolve(
        organisation_id=_organisation_id(request), model_name=model, ref=ref, ref_param=param
    )
    _note_version(request, servable)
    services.require_ready(servable, param=param)
    feeds, form = _predict_feeds(request, servable)
    rows = services.feeds_check(servable=servable, feeds=feeds, param_prefix=form)
    if usage.hold is not None:  # the quota and budget hold every row before the model runs
        usage.hold(rows)
    outputs = services.predict(servable=servable, feeds=feeds)
    usage.units, usage.meter = rows, Meter.ONLINE_PREDICTIONS
    key = "predictions" if form == "instances" else "outputs"
    body = {
        key: predict_response(outputs, form=form, instances=instances_of(feeds)),
        "model_version": str(servable.number),
    }
    response = HttpResponse(dumps(body), content_type="application/json")
    response["X-Model-Version"] = str(servable.number)
    return response


def infer(request: HttpRequest, *, model: str, ref: str | None = None) -> HttpResponse:
    """OIP v2 infer, JSON or with the binary tensor extension (tritonclient's default)."""
    usage = usage_of(request)
    usage.face = "v2-infer"
    servable = services.servable_resolve(organisation_id=_organisation_id(request), model_name=model, ref=ref)
    _note_version(request, servable)
    if servable.status != ModelVersion.Status.READY:
        raise Unavailable(f"Version {servable.number} of '{servable.model_name}' is not ready.")
    header_part, binary = split_binary_body(request.body, request.META.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
    body = numeric_json.oip_request(header_part)  # large numeric tensors straight to numpy, else None
    if body is None:
        try:
            body = orjson.loads(header_part)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"The body is not valid JSON: {exc}") from None
    feeds = oip_feeds(body, binary, signature=servable.signature)
    rows = services.feeds_check(servable=servable, feeds=feeds, param_prefix="inputs")
    if usage.hold is not None:
        usage.hold(rows)
    available = [o["name"] for o in servable.signature["outputs"]]
    wanted = requested_outputs(body, available=available)
    outputs = services.predict(servable=servable, feeds=feeds, output_names=[name for name, _ in wanted])
    usage.units, usage.meter = rows, Meter.ONLINE_PREDICTIONS
    tensors, blob = oip_outputs(outputs, wanted)
    payload: dict[str, Any] = {"model_name": servable.model_name, "model_version": str(servable.number)}
    if isinstance(body.get("id"), str):
        payload["id"] = body["id"]
    payload["outputs"] = tensors
    head = dumps(payload)
    if blob:
        response = HttpResponse(head + blob, content_type="application/octet-stream")
        response["Inference-Header-Content-Length"] = str(len(head))
    else:
        response = HttpResponse(head, content_type="application/json")
    response["X-Model-Version"] = str(servable.number)
    return response


PREDICT_REQUEST = inline_serializer(
    "PredictRequest",
    fields={
        "instances": serializers.ListField(
            child=serializers.JSONField(),
            required=False,
            help_text="Rows; objects keyed by input name for several inputs.",
        ),
        "inputs": serializers.JSONField(required=False, help_text="Columnar tensors, or {input name: tensor}."),
    },
)
PREDICT_RESPONSE = inline_serializer(
    "PredictResponse",
    fields={
        "predictions": serializers.ListField(child=serializers.JSONField(), required=False),
        "outputs": serializers.JSONField(required=False),
        "model_version": serializers.CharField(),
    },
)


class PredictView(APIView):
    """`POST /v1/models/{m}[:predict | /versions/{v}:predict | /labels/{alias}:predict]`.

    Most calls never reach this class: the gateway serves them by the fast route in `urls.py`.
    It documents the operation and serves what the fast route passes on (an explicit `Accept`
    header other than JSON, a `?format=` query), through DRF's negotiation and permissions.
    """

    required_scope = "predict"

    @extend_schema(
        summary="Predict (TF-Serving / Vertex AI style)",
        request=PREDICT_REQUEST,
        responses={200: PREDICT_RESPONSE, **ERROR_RESPONSES},
        parameters=[
            IDEMPOTENCY_KEY_HEADER,
        ],
        examples=[OpenApiExample("Iris", value={"instances": [[5.1, 3.5, 1.4, 0.2]]}, request_only=True)],
        tags=["online inference"],
    )
    def post(self, request: Request, model: str, version: str | None = None, alias: str | None = None) -> HttpResponse:
        return predict(request._request, model=model, ref=version, alias=alias)


# --- Open Inference Protocol v2 ------------------------------------------------------------------

OIP_TENSOR: dict[str, serializers.Field] = {
    "name": serializers.CharField(),
    "datatype": serializers.CharField(),
    "shape": serializers.ListField(child=serializers.IntegerField()),
}
OIP_INFER_REQUEST = inline_serializer(
    "InferRequest",
    fields={
        "id": serializers.CharField(required=False),
        "parameters": serializers.DictField(required=False),
        "inputs": serializers.ListField(
            min_length=1,
            child=inline_serializer(
                "InferInputTensor",
                fields={
                    **OIP_TENSOR,
                    "data": serializers.JSONField(required=False),
                    "parameters": serializers.DictField(required=False),
                },
            ),
        ),
        "outputs": serializers.ListField(
            required=False,
            child=inline_serializer(
                "InferRequestedOutput",
                fields={"name": serializers.CharField(), "parameters": serializers.DictField(required=False)},
            ),
        ),
    },
)
OIP_INFER_RESPONSE = inline_serializer(
    "InferResponse",
    fields={
        "model_name": serializers.CharField(),
        "model_version": serializers.CharField(),
        "id": serializers.CharField(required=False),
        "outputs": serializers.ListField(
            child=inline_serializer(
                "InferOutputTensor",
                fields={
                    **OIP_TENSOR,
                    "data": serializers.JSONField(required=False),
                    "parameters": serializers.DictField(required=False),
                },
            )
        ),
    },
)
OIP_METADATA = inline_serializer(
    "ModelMetadata",
    fields={
        "name": serializers.CharField(),
        "versions": serializers.ListField(child=serializers.CharField()),
        "platform": serializers.CharField(),
        "inputs": serializers.ListField(child=inline_serializer("MetadataTensor", fields=OIP_TENSOR)),
        "outputs": serializers.ListField(child=inline_serializer("MetadataTensorOut", fields=OIP_TENSOR)),
    },
)
READY = inline_serializer("Ready", fields={"ready": serializers.BooleanField()})
LIVE = inline_serializer("Live", fields={"live": serializers.BooleanField()})


class LiveView(APIView):
    # Public on purpose: orchestrators probe liveness without credentials.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="v2_health_live", responses={200: LIVE}, auth=[], tags=["open inference protocol"])
    def get(self, request: Request) -> Response:
        return Response({"live": True})


class ReadyView(APIView):
    # Public on purpose: load balancers probe readiness without credentials.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="v2_health_ready", responses={200: READY, 503: READY}, auth=[], tags=["open inference protocol"]
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            return Response({"ready": False}, status=503)
        return Response({"ready": True})


class ServerMetadataView(APIView):
    @extend_schema(
        operation_id="v2_server_metadata",
        responses={
            200: inline_serializer(
                "ServerMetadata",
                fields={
                    "name": serializers.CharField(),
                    "version": serializers.CharField(),
                    "extensions": serializers.ListField(child=serializers.CharField()),
                },
            ),
            **OIP_ERROR_RESPONSES,
        },
        tags=["open inference protocol"],
    )
    def get(self, request: Request) -> Response:
        return Response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})


class ModelMetadataView(APIView):
    @extend_schema(responses={200: OIP_METADATA, **OIP_ERROR_RESPONSES}, tags=["open inference protocol"])
    def get(self, request: Request, model: str, version: str | None = None) -> Response:
        organisation_id = _organisation_id(request)
        servable = services.servable_resolve(organisation_id=organisation_id, model_name=model, ref=version)
        _note_version(request, servable)
        if servable.status != ModelVersion.Status.READY:  # no signature to describe (failed or validating)
            raise Unavailable(f"Version {servable.number} of '{servable.model_name}' is not ready.")
        versions = (
            model_get(name=model, organisation_id=organisation_id)
            .versions.filter(status=ModelVersion.Status.READY)
            .order_by("number")
            .values_list("number", flat=True)
        )
        body = {
            "name": servable.model_name,
            "versions": [str(n) for n in versions],
            "platform": "onnxruntime_onnx",
            "inputs": servable.signature.get("inputs", []),
            "outputs": servable.signature.get("outputs", []),
        }
        return Response(body, headers={"X-Model-Version": str(servable.number)})


class ModelReadyView(APIView):
    @extend_schema(responses={200: READY, 503: READY, **OIP_ERROR_RESPONSES}, tags=["open inference protocol"])
    def get(self, request: Request, model: str, version: str | None = None) -> Response:
        servable = services.servable_resolve(organisation_id=_organisation_id(request), model_name=model, ref=version)
        _note_version(request, servable)
        ready = servable.status == ModelVersion.Status.READY
        return Response(
            {"ready": ready}, status=200 if ready else 503, headers={"X-Model-Version": str(servable.number)}
        )


class InferNegotiation(ContentNegotiation):
    """A client may accept `application/octet-stream`, the type of binary-tensor answers: JSON renders
    the rest (errors, JSON outputs), as Triton answers them whatever the Accept header."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        try:
            return super().select_renderer(request, renderers, format_suffix)  # type: ignore[no-any-return]
        except NotAcceptable:
            if "application/octet-stream" not in request.META.get("HTTP_ACCEPT", ""):
                raise
            first = next(iter(renderers))
            return first, first.media_type


class InferView(APIView):
    """OIP v2 infer; like `PredictView`, served by the gateway's fast route in the common case."""

    required_scope = "predict"
    content_negotiation_class = InferNegotiation

    @extend_schema(
        request=OIP_INFER_REQUEST,
        responses={200: OIP_INFER_RESPONSE, **OIP_ERROR_RESPONSES},
        parameters=[
            OpenApiParameter("Inference-Header-Content-Length", int, OpenApiParameter.HEADER, required=False),
            IDEMPOTENCY_KEY_HEADER,
        ],
        tags=["open inference protocol"],
    )
    def post(self, request: Request, model: str, version: str | None = None) -> HttpResponse:
        return infer(request._request, model=model, ref=version)


# One class per path, so every operation has its own stable operation id in the schema.
@extend_schema_view(post=extend_schema(operation_id="predict", parameters=[MODEL_PATH]))
class PredictDefaultView(PredictView):
    pass


@extend_schema_view(post=extend_schema(operation_id="predict_version", parameters=[MODEL_PATH, VERSION_PATH]))
class PredictVersionView(PredictView):
    pass


@extend_schema_view(post=extend_schema(operation_id="predict_label", parameters=[MODEL_PATH, ALIAS_PATH]))
class PredictLabelView(PredictView):
    pass


@extend_schema_view(get=extend_schema(operation_id="v2_model_metadata", parameters=[MODEL_PATH]))
class ModelMetadataDefaultView(ModelMetadataView):
    pass


@extend_schema_view(get=extend_schema(operation_id="v2_model_version_metadata", parameters=[MODEL_PATH, VERSION_PATH]))
class ModelVersionMetadataView(ModelMetadataView):
    pass


@extend_schema_view(get=extend_schema(operation_id="v2_model_ready", parameters=[MODEL_PATH]))
class ModelReadyDefaultView(ModelReadyView):
    pass


@extend_schema_view(get=extend_schema(operation_id="v2_model_version_ready", parameters=[MODEL_PATH, VERSION_PATH]))
class ModelVersionReadyView(ModelReadyView):
    pass


@extend_schema_view(post=extend_schema(operation_id="v2_infer", parameters=[MODEL_PATH]))
class InferDefaultView(InferView):
    pass


@extend_schema_view(post=extend_schema(operation_id="v2_infer_version", parameters=[MODEL_PATH, VERSION_PATH]))
class InferVersionView(InferView):
    pass
