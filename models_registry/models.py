"""Models, their immutable versions (ONNX files) and movable aliases."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# `\Z`, not `$`: `$` also matches before a final newline, and a name "iris\n" cannot be reached by URL.
NAME_VALIDATOR = RegexValidator(
    r"\A[a-z0-9][a-z0-9._-]{0,62}\Z", "Lower-case letters, digits, '.', '_' and '-', starting alphanumeric."
)
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"  # as the OpenAPI schema writes it (ECMA-262: `$` is the end)
ALIAS_VALIDATOR = RegexValidator(r"\A[a-z][a-z0-9_-]{0,39}\Z", "A slug starting with a letter.")
RESERVED_ALIASES = {"latest"}


class MLModel(models.Model):
    """A named model. Public (organisation empty: the catalogue) or private to one organisation."""

    name = models.CharField(max_length=63, unique=True, validators=[NAME_VALIDATOR])
    description = models.TextField(blank=True, default="")
    organisation = models.ForeignKey(
        "apiservice.Organisation", null=True, blank=True, on_delete=models.CASCADE, related_name="models"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "model"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_public(self) -> bool:
        return self.organisation_id is None


def version_upload_to(instance: "ModelVersion", filename: str) -> str:
    return f"models/{instance.model.name}/{instance.number}/model.onnx"


class ModelVersion(models.Model):
    """One immutable ONNX file. Only `status` and `failure_reason` change, during validation."""

    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    model = models.ForeignKey(MLModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    file = models.FileField(upload_to=version_upload_to, max_length=300)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField(default=0)
    opset = models.PositiveIntegerField(null=True, blank=True)
    producer = models.CharField(max_length=200, blank=True, default="")
    # {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}; -1 marks a dynamic dimension.
    signature = models.JSONField(default=dict)
    labels = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    failure_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["model", "number"]
        constraints = [models.UniqueConstraint(fields=["model", "number"], name="uniq_model_version")]

    def __str__(self) -> str:
        return f"{self.model.name}:{self.number}"

    @property
    def is_servable(self) -> bool:
        return self.status == self.Status.READY


class ModelAlias(models.Model):
    model = models.ForeignKey(MLModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=40, validators=[ALIAS_VALIDATOR])
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "model aliases"
        ordering = ["model", "name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="uniq_model_alias")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class AliasMove(models.Model):
    """History: who pointed which alias from which version to which (none: the alias was deleted), and
    when. It outlives the alias: deleting one records a last move and keeps the rest."""

    model = models.ForeignKey(MLModel, on_delete=models.CASCADE, related_name="alias_moves")
    alias_name = models.CharField(max_length=40)
    alias = models.ForeignKey(ModelAlias, null=True, blank=True, on_delete=models.SET_NULL, related_name="moves")
    from_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    moved_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-moved_at", "-id"]

    def __str__(self) -> str:
        return f"{self.alias_name}: {self.from_version_id} -> {self.to_version_id}"
