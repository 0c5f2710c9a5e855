from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from apiservice.errors import InvalidInput

from . import services
from .models import AliasMove, MLModel, ModelAlias, ModelVersion


def _check_alias(alias: str) -> None:
    """The service's alias rules, as a form error (the admin shows no API error)."""
    try:
        services.alias_name_check(alias=alias)
    except InvalidInput as exc:
        raise ValidationError(exc.message) from None


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

    def clean_aliases(self) -> list[str]:
        aliases = [a.strip() for a in self.cleaned_data.get("aliases", "").split(",") if a.strip()]
        for alias in aliases:
            _check_alias(alias)
        return aliases


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["model", "number", "status", "size_bytes", "opset", "created_at"]
    list_filter = ["status"]
    search_fields = ["model__name", "sha256"]
    list_select_related = ["model"]
    readonly_fields = [
        "model",
        "number",
        "stored_file",
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
        version = services.model_version_register(
            model=form.cleaned_data["model"],
            content=form.cleaned_data["upload"].read(),
            created_by=request.user,
            aliases=form.cleaned_data["aliases"],
        )
        obj.pk, obj.number, obj.status = version.pk, version.number, version.status  # named in "was added"
        if version.status == ModelVersion.Status.FAILED:
            messages.error(request, f"Version {version.number} failed validation: {version.failure_reason}")
        else:
            messages.success(request, f"Version {version.number} is ready.")

    def response_add(self, request: HttpRequest, obj: ModelVersion, post_url_continue: str | None = None) -> Any:
        """A failed upload opens its version (the reason is on that page), without Django's "was added
        successfully", which would contradict the error message `save_model` left."""
        if obj.status == ModelVersion.Status.FAILED:
            return HttpResponseRedirect(reverse("admin:models_registry_modelversion_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    @admin.display(description="File")
    def stored_file(self, obj: ModelVersion) -> str:
        """The stored name, and a staff-only download: model files are private, /media/ is not served."""
        if not obj.file:
            return "-"
        url = reverse("admin:models_registry_modelversion_file", args=[obj.pk])
        return format_html('{} (<a href="{}">download</a>)', obj.file.name, url)

    def get_urls(self) -> list[URLPattern]:
        download = path(
            "<path:object_id>/file/",
            self.admin_site.admin_view(self.file_download),
            name="models_registry_modelversion_file",
        )
        return [download, *super().get_urls()]

    def file_download(self, request: HttpRequest, object_id: str) -> FileResponse:
        version = self.get_object(request, object_id)
        if version is None or not version.file:
            raise Http404("No such model file.")
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        name = f"{version.model.name}-{version.number}.onnx"
        return FileResponse(version.file.open("rb"), as_attachment=True, filename=name)


class AliasMoveInline(admin.TabularInline):
    model = AliasMove
    extra = 0
    fields = ["from_version", "to_version", "moved_by", "moved_at"]
    readonly_fields = ["from_version", "to_version", "moved_by", "moved_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AliasForm(forms.ModelForm):
    """Refuses what `services.alias_move` would refuse, as form errors instead of a 500."""

    class Meta:
        model = ModelAlias
        fields = ["model", "name", "version"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        versions = ModelVersion.objects.filter(status=ModelVersion.Status.READY).select_related("model")
        if self.instance.model_id:  # an existing alias moves within its model
            versions = versions.filter(model_id=self.instance.model_id)
        self.fields["version"].queryset = versions.order_by("model__name", "number")  # type: ignore[attr-defined]
        self.fields["version"].help_text = "A ready version of the alias's model (shown as model:number)."

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        _check_alias(name)
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        model = data.get("model") if "model" in self.fields else self.instance.model
        version = data.get("version")
        if model is not None and version is not None and version.model_id != model.pk:
            self.add_error("version", f"Version {version} belongs to another model; choose one of {model.name}'s.")
        return data


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    form = AliasForm
    list_display = ["model", "name", "version", "updated_at"]
    list_select_related = ["model", "version"]
    inlines = [AliasMoveInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["model", "name"] if obj is not None else []  # moving an alias never renames or re-homes it

    def delete_model(self, request: HttpRequest, obj: ModelAlias) -> None:
        services.alias_delete(alias=obj, deleted_by=request.user)  # recorded; the alias's history stays

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for alias in queryset:
            services.alias_delete(alias=alias, deleted_by=request.user)

    def save_model(self, request: HttpRequest, obj: ModelAlias, form: Any, change: bool) -> None:
        moved = services.alias_move(model=obj.model, alias=obj.name, version=obj.version, moved_by=request.user)
        obj.pk = moved.pk
