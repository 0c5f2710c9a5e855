"""`manage.py register_model NAME PATH [--alias A ...] [--organisation SLUG]`."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apiservice.errors import APIError
from apiservice.models import Organisation
from models_registry.models import ModelVersion
from models_registry.services import alias_name_check, model_for_upload, model_version_register


class Command(BaseCommand):
    help = "Register an ONNX file as the next version of a model (created if new), validating it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", help="Model name (lower-case slug).")
        parser.add_argument("path", type=Path, help="Path to the .onnx file.")
        parser.add_argument("--alias", action="append", default=[], help="Alias to point at it (repeatable).")
        parser.add_argument(
            "--organisation",
            default="",
            help="A new model: slug of the organisation it is private to (an existing model keeps its owner).",
        )
        parser.add_argument("--description", default="")

    def handle(
        self, *args: Any, name: str, path: Path, alias: list[str], organisation: str, description: str, **options: Any
    ) -> None:
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        if path.stat().st_size == 0:  # as the staff API refuses it: nothing is created
            raise CommandError(f"{path} is empty.")
        organisation_id = None
        if organisation:
            found = Organisation.objects.filter(slug=organisation).first()
            if found is None:
                raise CommandError(f"No organisation '{organisation}'.")
            organisation_id = found.pk
        try:
            for alias_name in alias:  # before the model is created: a refused command leaves nothing behind
                alias_name_check(alias=alias_name)
            model = model_for_upload(name=name, organisation_id=organisation_id, description=description)
            version = model_version_register(model=model, content=path.read_bytes(), aliases=alias)
        except APIError as exc:
            raise CommandError(exc.message) from None
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"{name} v{version.number} failed validation: {version.failure_reason}")
        self.stdout.write(self.style.SUCCESS(f"{name} v{version.number} is ready (sha256 {version.sha256[:12]})."))
