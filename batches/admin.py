from django.contrib import admin

from .models import Batch, BatchChunk, BatchPart, File, WebhookAttempt, WebhookDelivery


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["uid", "organisation", "purpose", "filename", "format", "bytes", "created_at"]
    list_filter = ["purpose", "format"]
    list_select_related = ["organisation"]
    search_fields = ["uid", "filename", "organisation__name"]
    readonly_fields = ["uid", "storage_name"]


class ChunkInline(admin.TabularInline):
    model = BatchChunk
    extra = 0
    can_delete = False
    fields = [
        "index",
        "status",
        "attempts",
        "lines",
        "rows",
        "succeeded_lines",
        "failed_lines",
        "started_at",
        "finished_at",
    ]
    readonly_fields = ("index", "status", "attempts", "lines", "rows", "succeeded_lines", "failed_lines")


class PartInline(admin.TabularInline):
    model = BatchPart
    extra = 0
    can_delete = False
    fields = ["index", "status", "attempts", "byte_offset", "byte_length", "started_at"]
    readonly_fields = ["index", "status", "attempts", "byte_offset", "byte_length", "started_at"]


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["uid", "organisation", "status", "total", "completed", "failed", "created_at"]
    list_filter = ["status"]
    list_select_related = ["organisation"]
    search_fields = ["uid", "organisation__name", "idempotency_key"]
    raw_id_fields = ["input_file", "output_file", "error_file", "model_version", "api_key"]
    readonly_fields = ["uid", "request_hash"]
    inlines = [PartInline, ChunkInline]


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "status_code", "error", "duration_ms", "created_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["message_id", "batch", "event", "status", "attempts", "last_status_code", "created_at"]
    list_filter = ["status", "event"]
    list_select_related = ["batch"]
    search_fields = ["message_id", "batch__uid"]
    readonly_fields = ["message_id", "payload"]
    inlines = [AttemptInline]
