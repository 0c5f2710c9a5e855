from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from .models import Batch, BatchChunk, BatchPart, File, WebhookAttempt, WebhookDelivery


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff read these here; only the API and the workers write them. A save from a change form wrote
    back every field as loaded: a running batch lost the counters its workers added meanwhile, and a
    batch or file could be handed to another organisation."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(File)
class FileAdmin(ReadOnlyAdmin):
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
class BatchAdmin(ReadOnlyAdmin):
    list_display = ["uid", "organisation", "status", "total", "completed", "failed", "created_at"]
    list_filter = ["status"]
    list_select_related = ["organisation"]
    search_fields = ["uid", "organisation__name", "idempotency_key"]
    raw_id_fields = ["input_file", "output_file", "error_file", "model_version", "api_key"]
    readonly_fields = ["uid", "request_hash"]
    inlines = [PartInline, ChunkInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6's default, said now


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
