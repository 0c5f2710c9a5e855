from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from . import services
from .models import AliasMove, MLModel, ModelAlias, ModelVersion


class VersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    fields = ("number", "status", "sha256", "size_bytes", "opset", "created_at")
    readonly_fields = ("number", "status", "sha256", "size_bytes", "opset", "created_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(MLModel)
class MLModelAdmin(admin.ModelAdmin):
    list_display = ["name", "organisation", "created_at"]
    search_fields = ["name"]
    list_select_related = ["organisation"]
    inlines = [VersionInline]


class VersionUploadForm(forms.ModelForm):
    upload = forms.FileField(help_text="An .onnx file; it is validated before it becomes ready.")
    aliases = forms.CharField(required=False, help_text="Comma-separated aliases to point at it if valid.")

    class Meta:
        model = ModelVersion
        fields = ["model"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["model", "number", "status", "size_bytes", "opset", "created_at"]
    list_filter = ["status"]
    search_fields = ["model__name", "sha256"]
    list_select_related = ["model"]
    readonly_fields = [
        "model",
        "number",
        "file",
        "sha256",
        "size_bytes",
        "opset",
        "producer",
        "signature",
        "labels",
        "status",
        "failure_reason",
        "created_at",
        "created_by",
    ]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = VersionUploadForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ["model", "upload", "aliases"]

    def save_model(self, request: HttpRequest, obj: ModelVersion, form: Any, change: bool) -> None:
        if change:
            return  # versions are immutable
        aliases = [a.strip() for a in form.cleaned_data.get("aliases", "").split(",") if a.strip()]
        version = services.model_version_register(
            model=form.cleaned_data["model"],
            content=form.cleaned_data["upload"].read(),
            created_by=request.user,
            aliases=aliases,
        )
        obj.pk = version.pk
        if version.status == ModelVersion.Status.FAILED:
            messages.error(request, f"Version {version.number} failed validation: {version.failure_reason}")
        else:
            messages.success(request, f"Version {version.number} is ready.")


class AliasMoveInline(admin.TabularInline):
    model = AliasMove
    extra = 0
    readonly_fields = ["from_version", "to_version", "moved_by", "moved_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["model", "name", "version", "updated_at"]
    list_select_related = ["model", "version"]
    inlines = [AliasMoveInline]

    def save_model(self, request: HttpRequest, obj: ModelAlias, form: Any, change: bool) -> None:
        moved = services.alias_move(model=obj.model, alias=obj.name, version=obj.version, moved_by=request.user)
        obj.pk = moved.pk
