"""Catalogue (any key) and the staff-only registration API."""

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apiservice.auth import request_principal
from apiservice.errors import InvalidInput
from apiservice.pagination import CursorPagination
from apiservice.schema import (
    ERROR_RESPONSES,
    MODEL_PATH,
    PAGE_PARAMETERS,
    READ_ERROR_RESPONSES,
    VERSION_PATH,
    paginated,
)

from . import selectors, services
from .models import ALIAS_PATTERN, MLModel, ModelAlias, ModelVersion


class TensorSpec(serializers.Serializer):
    name = serializers.CharField()
    datatype = serializers.CharField()
    shape = serializers.ListField(child=serializers.IntegerField())


class SignatureOut(serializers.Serializer):
    inputs = TensorSpec(many=True)
    outputs = TensorSpec(many=True)


class VersionOut(serializers.Serializer):
    version = serializers.IntegerField(source="number")
    status = serializers.CharField()
    failure_reason = serializers.CharField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    opset = serializers.IntegerField(allow_null=True)
    producer = serializers.CharField()
    signature = serializers.SerializerMethodField()
    labels = serializers.ListField(child=serializers.JSONField(), allow_null=True)
    aliases = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(SignatureOut(allow_null=True))
    def get_signature(self, obj: ModelVersion) -> dict | None:
        return obj.signature or None  # a failed version may have no signature

    def get_aliases(self, obj: ModelVersion) -> list[str]:
        return sorted(a.name for a in obj.aliases.all())


class ModelOut(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    visibility = serializers.SerializerMethodField()
    aliases = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_visibility(self, obj: MLModel) -> str:
        return "public" if obj.is_public else "private"

    def get_aliases(self, obj: MLModel) -> dict[str, int]:
        return {a.name: a.version.number for a in obj.aliases.all()}

    def get_latest_version(self, obj: MLModel) -> int | None:
        ready = [v.number for v in obj.versions.all() if v.status == ModelVersion.Status.READY]
        return max(ready) if ready else None


def _org(request: Request) -> int | None:
    principal = request_principal(request)
    return principal.organisation_id if principal else None


class ModelNamePagination(CursorPagination):
    ordering = "name"
    numeric_position = False


class VersionPagination(CursorPagination):
    ordering = "-number"


def _with_relations(queryset: QuerySet[MLModel]) -> QuerySet[MLModel]:
    return queryset.prefetch_related(
        Prefetch("aliases", queryset=ModelAlias.objects.select_related("version")), "versions"
    )


class ModelListView(APIView):
    @extend_schema(
        parameters=PAGE_PARAMETERS,
        operation_id="models_list",
        responses={200: paginated("PaginatedModelList", ModelOut()), **READ_ERROR_RESPONSES},
        tags=["catalogue"],
    )
    def get(self, request: Request) -> Response:
        paginator = ModelNamePagination()
        page = paginator.paginate_queryset(
            _with_relations(selectors.model_list(organisation_id=_org(request))), request, view=self
        )
        return paginator.get_paginated_response(ModelOut(page, many=True).data)


class ModelDetailView(APIView):
    @extend_schema(
        operation_id="models_retrieve",
        parameters=[MODEL_PATH],
        responses={200: ModelOut, **READ_ERROR_RESPONSES},
        tags=["catalogue"],
    )
    def get(self, request: Request, model: str) -> Response:
        found = selectors.model_get(name=model, organisation_id=_org(request))
        return Response(ModelOut(_with_relations(MLModel.objects.filter(pk=found.pk)).get()).data)


class VersionListView(APIView):
    @extend_schema(
        operation_id="model_versions_list",
        parameters=[MODEL_PATH, *PAGE_PARAMETERS],
        responses={200: paginated("PaginatedVersionList", VersionOut()), **READ_ERROR_RESPONSES},
        tags=["catalogue"],
    )
    def get(self, request: Request, model: str) -> Response:
        found = selectors.model_get(name=model, organisation_id=_org(request))
        paginator = VersionPagination()
        queryset = found.versions.prefetch_related("aliases")
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(VersionOut(page, many=True).data)


class VersionDetailView(APIView):
    @extend_schema(
        operation_id="model_versions_retrieve",
        parameters=[MODEL_PATH, VERSION_PATH],
        responses={200: VersionOut, **READ_ERROR_RESPONSES},
        tags=["catalogue"],
    )
    def get(self, request: Request, model: str, version: str) -> Response:
        found = selectors.model_get(name=model, organisation_id=_org(request))
        resolved = selectors.model_version_resolve(model=found, ref=version)
        return Response(VersionOut(resolved).data, headers={"X-Model-Version": str(resolved.number)})


class VersionUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    aliases = serializers.CharField(required=False, allow_blank=True, help_text="Comma-separated aliases.")
    description = serializers.CharField(required=False, allow_blank=True)
    organisation = serializers.SlugField(
        required=False,
        allow_blank=True,
        help_text="A new model: private to this organisation. An existing one keeps its owner (named, it must match).",
    )

    def validate_aliases(self, value: str) -> list[str]:
        """The aliases as a list, each checked now: a bad one must not leave a model or version behind."""
        aliases = [alias.strip() for alias in value.split(",") if alias.strip()]
        for alias in aliases:
            services.alias_name_check(alias=alias)
        return aliases


class AliasMoveSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)


class StaffVersionCreateView(APIView):
    """Staff only (Django staff user via session or HTTP Basic): upload a new version."""

    # Basic first: a caller without credentials (or with an API key) is challenged for them (401).
    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser]

    InputSerializer = VersionUploadSerializer

    @extend_schema(
        operation_id="staff_model_versions_create",
        request={"multipart/form-data": InputSerializer},
        responses={201: VersionOut, **ERROR_RESPONSES},
        tags=["staff"],
    )
    def post(self, request: Request, model: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        organisation_id = _organisation_by_slug(data.validated_data.get("organisation") or "")
        found = services.model_for_upload(
            name=model, organisation_id=organisation_id, description=data.validated_data.get("description", "")
        )
        version = services.model_version_register(
            model=found,
            content=data.validated_data["file"].read(),
            created_by=request.user,
            aliases=data.validated_data.get("aliases") or [],
        )
        return Response(VersionOut(version).data, status=201)


def _organisation_by_slug(slug: str) -> int | None:
    if not slug:
        return None
    from apiservice.models import Organisation

    organisation = Organisation.objects.filter(slug=slug).first()
    if organisation is None:
        raise InvalidInput(f"No organisation '{slug}'.", param="organisation")
    return organisation.pk


class StaffAliasView(APIView):
    # Basic first: a caller without credentials (or with an API key) is challenged for them (401).
    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]

    InputSerializer = AliasMoveSerializer

    @extend_schema(
        operation_id="staff_model_alias_move",
        parameters=[
            MODEL_PATH,
            OpenApiParameter(
                "alias",
                str,
                OpenApiParameter.PATH,
                pattern=ALIAS_PATTERN,
                description="A slug starting with a letter; `latest` is reserved.",
            ),
        ],
        request=InputSerializer,
        responses={
            200: inline_serializer(
                "AliasOut", fields={"alias": serializers.CharField(), "version": serializers.IntegerField()}
            ),
            **ERROR_RESPONSES,
        },
        tags=["staff"],
    )
    def put(self, request: Request, model: str, alias: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        found = MLModel.objects.filter(name=model).first()
        if found is None:
            from apiservice.errors import NotFound

            raise NotFound(f"Model '{model}' not found.", code="model_not_found")
        version = selectors.model_version_resolve(model=found, ref=str(data.validated_data["version"]))
        moved = services.alias_move(model=found, alias=alias, version=version, moved_by=request.user)
        return Response({"alias": moved.name, "version": version.number})
