"""`/v1/files` and `/v1/batches` (OpenAI Batch style). Views parse, call one service, render."""

from typing import Any

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apiservice.auth import Principal, request_principal
from apiservice.errors import InvalidInput
from apiservice.middleware import usage_of
from apiservice.pagination import paginated_response
from apiservice.schema import (
    ERROR_RESPONSES,
    IDEMPOTENCY_KEY_HEADER,
    PAGE_PARAMETERS,
    READ_ERROR_RESPONSES,
    paginated,
)
from billing.idempotency import malformed_key

from . import selectors, services, storage
from .models import File

FILE_TAGS = ["files"]
BATCH_TAGS = ["batches"]


def _principal(request: Request) -> Principal:
    principal = request_principal(request)
    assert principal is not None  # HasAPIKey ran first
    usage_of(request).face = "batches"  # API calls; billed chunks are face "batch"
    return principal


class FileOut(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    bytes = serializers.IntegerField()
    created_at = serializers.IntegerField()
    filename = serializers.CharField()
    purpose = serializers.CharField()
    format = serializers.CharField()


class FileDeletedOut(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    deleted = serializers.BooleanField()


class FileListView(APIView):
    required_scope = "batch"
    parser_classes = [MultiPartParser]

    @extend_schema_serializer(component_name="FileUpload")
    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="JSONL or CSV rows (see docs/batch.md).")
        purpose = serializers.ChoiceField(choices=["batch"])

    @extend_schema(
        operation_id="files_upload",
        summary="Upload a batch input file",
        request={"multipart/form-data": InputSerializer},
        responses={201: FileOut, **ERROR_RESPONSES},
        tags=FILE_TAGS,
    )
    def post(self, request: Request) -> Response:
        principal = _principal(request)
        uploads = request.FILES.getlist("file")
        if not uploads:
            raise InvalidInput("Send the file as the multipart field 'file'.", param="file")
        if len(uploads) > 1:  # storing one of them would leave the client thinking all were stored
            raise InvalidInput(f"Send one file per upload; 'file' came {len(uploads)} times.", param="file")
        upload = uploads[0]
        data: Any = request.data
        purpose = str(data.get("purpose", ""))
        record = services.file_create(organisation_id=principal.organisation_id, upload=upload, purpose=purpose)
        return Response(FileOut(selectors.file_data(record=record)).data, status=201)

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        operation_id="files_list",
        summary="List files",
        responses={200: paginated("PaginatedFileList", FileOut()), **READ_ERROR_RESPONSES},
        tags=FILE_TAGS,
    )
    def get(self, request: Request) -> Response:
        principal = _principal(request)
        return paginated_response(
            request=request,
            view=self,
            queryset=selectors.file_list(organisation_id=principal.organisation_id),
            render=lambda page: [FileOut(selectors.file_data(record=f)).data for f in page],
        )


class FileDetailView(APIView):
    required_scope = "batch"

    @extend_schema(
        operation_id="files_retrieve",
        summary="A file",
        responses={200: FileOut, **READ_ERROR_RESPONSES},
        tags=FILE_TAGS,
    )
    def get(self, request: Request, file_id: str) -> Response:
        principal = _principal(request)
        record = selectors.file_get(organisation_id=principal.organisation_id, uid=file_id)
        return Response(FileOut(selectors.file_data(record=record)).data)

    @extend_schema(
        operation_id="files_delete",
        summary="Delete a file",
        responses={200: FileDeletedOut, **ERROR_RESPONSES},
        tags=FILE_TAGS,
    )
    def delete(self, request: Request, file_id: str) -> Response:
        principal = _principal(request)
        services.file_delete(organisation_id=principal.organisation_id, uid=file_id)
        return Response(FileDeletedOut({"id": file_id, "object": "file", "deleted": True}).data)


class FileContentView(APIView):
    required_scope = "batch"

    @extend_schema(
        operation_id="files_content",
        summary="Download a file's content (JSONL or CSV)",
        responses={
            (200, "application/jsonl"): OpenApiResponse(OpenApiTypes.BINARY, description="The file, streamed."),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY, description="The file, streamed."),
            **READ_ERROR_RESPONSES,
        },
        tags=FILE_TAGS,
    )
    def get(self, request: Request, file_id: str) -> FileResponse:
        principal = _principal(request)
        record = selectors.file_get(organisation_id=principal.organisation_id, uid=file_id)
        content_type = "text/csv" if record.format == File.Format.CSV else "application/jsonl"
        response = FileResponse(
            storage.open_read(record.storage_name),
            content_type=content_type,
            as_attachment=True,
            filename=record.filename,
        )
        return response


# --- Batches --------------------------------------------------------------------------------------


class RequestCountsOut(serializers.Serializer):
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()


class BatchErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    custom_id = serializers.CharField(allow_null=True, default=None, help_text="The line's, when it was valid.")


BatchErrorsOut = inline_serializer(
    "BatchErrors", fields={"object": serializers.CharField(), "data": BatchErrorOut(many=True)}, allow_null=True
)


class ProgressOut(serializers.Serializer):
    rows_total = serializers.IntegerField()
    rows_done = serializers.IntegerField()
    chunks_total = serializers.IntegerField()
    chunks_done = serializers.IntegerField()
    eta_seconds = serializers.FloatField(allow_null=True, help_text="Estimated seconds left while in progress.")


class BatchOut(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    input_file_id = serializers.CharField(allow_null=True)
    model = serializers.CharField()
    model_version = serializers.CharField(help_text="Resolved once, at creation.")
    completion_window = serializers.CharField()
    output_format = serializers.CharField()
    status = serializers.ChoiceField(
        choices=["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"]
    )
    output_file_id = serializers.CharField(allow_null=True)
    error_file_id = serializers.CharField(allow_null=True)
    errors = BatchErrorsOut  # type: ignore[assignment]  # a declared field, popped by the metaclass
    request_counts = RequestCountsOut()
    progress = ProgressOut()
    metadata = serializers.DictField(child=serializers.CharField(), allow_null=True)
    webhook_url = serializers.CharField(allow_null=True)
    created_at = serializers.IntegerField()
    in_progress_at = serializers.IntegerField(allow_null=True)
    expires_at = serializers.IntegerField()
    finalizing_at = serializers.IntegerField(allow_null=True)
    completed_at = serializers.IntegerField(allow_null=True)
    failed_at = serializers.IntegerField(allow_null=True)
    expired_at = serializers.IntegerField(allow_null=True)
    cancelling_at = serializers.IntegerField(allow_null=True)
    cancelled_at = serializers.IntegerField(allow_null=True)


def _batch_out(batch: Any) -> Any:
    return BatchOut(selectors.batch_data(batch=batch)).data


class _MetadataValue(serializers.CharField):
    """A string, as sent: numbers are refused rather than stored as text (metadata is returned as given)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class BatchListView(APIView):
    required_scope = "batch"

    @extend_schema_serializer(component_name="BatchCreate")
    class InputSerializer(serializers.Serializer):
        input_file_id = serializers.CharField()
        model = serializers.CharField(max_length=63)
        version = serializers.CharField(required=False, max_length=40)
        alias = serializers.CharField(required=False, max_length=40)
        output_format = serializers.ChoiceField(choices=["jsonl", "csv"], required=False)
        completion_window = serializers.CharField(required=False, max_length=16)
        metadata = serializers.DictField(child=_MetadataValue(max_length=512), required=False, allow_null=True)
        webhook_url = serializers.URLField(required=False, max_length=2000, allow_blank=True)

        def validate_metadata(self, value: dict[str, str] | None) -> dict[str, str] | None:
            if value is None:
                return value
            if len(value) > 16:
                raise serializers.ValidationError("At most 16 metadata keys.")
            if any(len(key) > 64 for key in value):
                raise serializers.ValidationError("Metadata keys are at most 64 characters.")
            if any("\x00" in key for key in value):  # PostgreSQL's jsonb cannot store it
                raise serializers.ValidationError("Null characters are not allowed in metadata keys.")
            return value

    @extend_schema(
        operation_id="batches_create",
        summary="Create a batch",
        request=InputSerializer,
        responses={
            201: BatchOut,
            200: OpenApiResponse(BatchOut, description="Replayed (same Idempotency-Key and body)."),
            **ERROR_RESPONSES,
        },
        parameters=[IDEMPOTENCY_KEY_HEADER],
        tags=BATCH_TAGS,
    )
    def post(self, request: Request) -> Response:
        principal = _principal(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        malformed = malformed_key(key) if key is not None else None
        if malformed is not None:
            raise malformed
        batch, created = services.batch_create(
            principal=principal, spec=services.spec_from(serializer.validated_data), idempotency_key=key
        )
        batch = selectors.batch_get(organisation_id=principal.organisation_id, uid=batch.uid)
        replayed = {} if created else {"Idempotent-Replayed": "true"}
        return Response(_batch_out(batch), status=201 if created else 200, headers=replayed)

    @extend_schema(
        parameters=PAGE_PARAMETERS,
        operation_id="batches_list",
        summary="List batches, newest first",
        responses={200: paginated("PaginatedBatchList", BatchOut()), **READ_ERROR_RESPONSES},
        tags=BATCH_TAGS,
    )
    def get(self, request: Request) -> Response:
        principal = _principal(request)
        return paginated_response(
            request=request,
            view=self,
            queryset=selectors.batch_list(organisation_id=principal.organisation_id),
            render=lambda page: [_batch_out(b) for b in page],
        )


class BatchDetailView(APIView):
    required_scope = "batch"

    @extend_schema(
        operation_id="batches_retrieve",
        summary="A batch",
        responses={200: BatchOut, **READ_ERROR_RESPONSES},
        tags=BATCH_TAGS,
    )
    def get(self, request: Request, batch_id: str) -> Response:
        principal = _principal(request)
        return Response(_batch_out(selectors.batch_get(organisation_id=principal.organisation_id, uid=batch_id)))


class BatchCancelView(APIView):
    required_scope = "batch"

    @extend_schema(
        operation_id="batches_cancel",
        summary="Cancel a batch",
        request=None,
        responses={200: BatchOut, **ERROR_RESPONSES},
        tags=BATCH_TAGS,
    )
    def post(self, request: Request, batch_id: str) -> Response:
        principal = _principal(request)
        return Response(_batch_out(services.batch_cancel(organisation_id=principal.organisation_id, uid=batch_id)))
