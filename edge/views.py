"""Edge bundle API (scope `bundles`): request, read, list, download URLs, the signed file, keys.

Views only translate: parse, call one service or selector, render.
"""

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apiservice.auth import APIKeyAuthentication, Principal, request_principal
from apiservice.middleware import usage_of
from apiservice.pagination import paginated_response
from apiservice.schema import ERROR_RESPONSES, PAGE_PARAMETERS, READ_ERROR_RESPONSES, ErrorEnvelope, paginated
from models_registry.selectors import model_get, model_version_resolve

from . import keys, selectors, services
from .http import file_response
from .models import VARIANTS, Bundle

TAGS = ["edge bundles"]


class VariantReportOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["published", "rejected", "skipped", "not_requested"])
    reason = serializers.CharField()
    parity = serializers.JSONField(required=False, help_text="Per-output metrics on the golden inputs.")
    build_seconds = serializers.FloatField(required=False)
    files = serializers.ListField(child=serializers.CharField(), required=False)


class BundleOut(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    model = serializers.CharField(source="model_version.model.name")
    version = serializers.IntegerField(source="model_version.number")
    variants = serializers.ListField(child=serializers.ChoiceField(choices=list(VARIANTS)))
    status = serializers.ChoiceField(choices=Bundle.Status.choices)
    progress = serializers.IntegerField(help_text="0-100")
    reason = serializers.CharField(help_text="Why the build failed, when it did.")
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    key_id = serializers.CharField()
    report = serializers.DictField(child=VariantReportOut(), help_text="Per variant, once built.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


def _principal(request: Request) -> Principal:
    principal = request_principal(request)
    assert principal is not None  # HasAPIKey has already refused anonymous calls
    return principal


def _note(request: Request, bundle: Bundle | None = None, face: str = "bundles") -> None:
    usage = usage_of(request)
    usage.face = face
    if bundle is not None:
        usage.model_version_id = bundle.model_version_id
        # The gateway names the version it records in X-Model-Version, from this (as inference views set it).
        request._request.model_version_number = bundle.model_version.number  # type: ignore[attr-defined]


class VersionBundlesView(APIView):
    """`/v1/models/{m}/versions/{v}/bundles`: POST requests a bundle, GET lists the version's bundles."""

    required_scope = "bundles"

    @extend_schema_serializer(component_name="BundleRequest")
    class InputSerializer(serializers.Serializer):
        variants = serializers.ListField(
            child=serializers.ChoiceField(choices=list(VARIANTS)),
            required=False,
            allow_empty=False,
            min_length=1,
            help_text="Variants to build (default: all). Each is built when it applies and passes the parity gate.",
        )

    @extend_schema(
        operation_id="bundles_create",
        summary="Request an edge bundle (built once per version and variants, then cached)",
        request=InputSerializer,
        responses={202: BundleOut, **ERROR_RESPONSES},
        tags=TAGS,
    )
    def post(self, request: Request, model: str, version: str) -> Response:
        found = model_get(name=model, organisation_id=_principal(request).organisation_id)
        resolved = model_version_resolve(model=found, ref=version)
        data = self.InputSerializer(data=request.data if request.data is not None else {})
        data.is_valid(raise_exception=True)
        bundle = services.bundle_request(version=resolved, variants=data.validated_data.get("variants"))
        _note(request, bundle)
        return Response(BundleOut(bundle).data, status=202, headers={"Location": f"/v1/bundles/{bundle.public_id}"})

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        operation_id="bundles_list_for_version",
        summary="List a version's bundles",
        responses={200: paginated("PaginatedBundleList", BundleOut()), **READ_ERROR_RESPONSES},
        tags=TAGS,
    )
    def get(self, request: Request, model: str, version: str) -> Response:
        found = model_get(name=model, organisation_id=_principal(request).organisation_id)
        resolved = model_version_resolve(model=found, ref=version)
        _note(request)
        return paginated_response(
            request=request,
            view=self,
            queryset=selectors.bundle_list_for_version(version=resolved),
            render=lambda page: BundleOut(page, many=True).data,
        )


class BundleDetailView(APIView):
    required_scope = "bundles"

    @extend_schema(operation_id="bundles_retrieve", responses={200: BundleOut, **READ_ERROR_RESPONSES}, tags=TAGS)
    def get(self, request: Request, bundle_id: str) -> Response:
        bundle = selectors.bundle_get(public_id=bundle_id, organisation_id=_principal(request).organisation_id)
        _note(request, bundle)
        return Response(BundleOut(bundle).data)


class BundleDownloadView(APIView):
    required_scope = "bundles"

    @extend_schema_serializer(component_name="BundleDownloadURL")
    class OutputSerializer(serializers.Serializer):
        url = serializers.URLField(help_text="Fetch with plain GET (no key needed); supports Range.")
        expires_at = serializers.DateTimeField()
        size_bytes = serializers.IntegerField()
        sha256 = serializers.CharField()
        etag = serializers.CharField()

    @extend_schema(
        operation_id="bundles_download",
        summary="A short-lived signed download URL for a ready bundle (each URL is one billed download)",
        responses={200: OutputSerializer, **READ_ERROR_RESPONSES, 409: ERROR_RESPONSES[409]},
        tags=TAGS,
    )
    def get(self, request: Request, bundle_id: str) -> Response:
        principal = _principal(request)
        bundle = selectors.bundle_get(public_id=bundle_id, organisation_id=principal.organisation_id)
        _note(request, bundle)
        grant = services.bundle_download_grant(bundle=bundle, principal=principal)
        path = reverse("edge:bundle-file", kwargs={"bundle_id": bundle.public_id})
        body = {
            "url": request.build_absolute_uri(f"{path}?token={grant.token}"),
            "expires_at": grant.expires_at,
            "size_bytes": bundle.size_bytes,
            "sha256": bundle.sha256,
            "etag": bundle.etag,
        }
        return Response(self.OutputSerializer(body).data)


class BundleFileView(APIView):
    """The zip behind a signed URL. The token authorises it, so no key is needed (a device or a
    download manager can fetch it); a key that is sent must belong to the URL's organisation."""

    authentication_classes = [APIKeyAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="bundles_file",
        summary="Download a bundle's zip through a signed URL",
        parameters=[
            OpenApiParameter("token", str, OpenApiParameter.QUERY, required=True),
            OpenApiParameter("Range", str, OpenApiParameter.HEADER, required=False),
        ],
        responses={
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The whole zip."),
            (206, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="One byte range."),
            304: OpenApiResponse(description="Not modified (If-None-Match)."),
            403: OpenApiResponse(
                ErrorEnvelope, description="Expired, invalid or another organisation's URL, or its key revoked."
            ),
            404: OpenApiResponse(ErrorEnvelope, description="No such bundle."),
            409: OpenApiResponse(ErrorEnvelope, description="The bundle is not ready."),
            416: OpenApiResponse(ErrorEnvelope, description="Range not satisfiable."),
            429: OpenApiResponse(
                ErrorEnvelope, description="The plan's monthly bundle downloads are used up (Retry-After)."
            ),
        },
        auth=[],
        tags=TAGS,
    )
    def get(self, request: Request, bundle_id: str) -> Any:
        _note(request, face="bundle-file")
        bundle, claims = services.bundle_download_authorise(
            public_id=bundle_id, token=request.query_params.get("token", ""), principal=request_principal(request)
        )

        def bill(status_code: int) -> None:  # a GET about to send bytes; HEAD, 304 and 416 never get here
            services.bundle_download_bill(bundle=bundle, claims=claims, status_code=status_code)

        return file_response(
            request._request,
            open_file=lambda: bundle.file.open("rb"),
            size=bundle.size_bytes,
            etag=bundle.etag,
            filename=f"{bundle.model_version.model.name}-v{bundle.model_version.number}-{bundle.public_id}.zip",
            before_body=bill if request.method == "GET" else None,
        )


class KeysView(APIView):
    # Public on purpose: public keys let anyone verify a bundle; they grant nothing.
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="EdgeKeys")
    class OutputSerializer(serializers.Serializer):
        @extend_schema_serializer(component_name="EdgeKey")
        class KeyOut(serializers.Serializer):
            key_id = serializers.CharField()
            algorithm = serializers.CharField()
            current = serializers.BooleanField(help_text="Signs new bundles; the others still verify old ones.")
            public_key_pem = serializers.CharField(source="pem")
            public_key_b64 = serializers.CharField(source="raw_b64", help_text="The raw 32-byte key, base64.")

        keys = KeyOut(many=True)

    @extend_schema(
        operation_id="edge_keys",
        summary="Public keys that verify bundle manifests",
        responses={200: OutputSerializer},
        auth=[],
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        listed = [
            {"key_id": k.key_id, "algorithm": "Ed25519", "current": k.current, "pem": k.pem, "raw_b64": k.raw_b64}
            for k in keys.public_keys()
        ]
        return Response(self.OutputSerializer({"keys": listed}).data)
