"""Create the demo organisation, a staff user, demo models and a fresh API key (printed once)."""

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apiservice import services
from apiservice.models import Membership
from models_registry import demo_models
from models_registry.models import ModelVersion
from models_registry.services import model_for_upload, model_version_register

DEMO_MODELS = {
    "iris": (demo_models.iris_classifier, "Iris species classifier (label and class probabilities)."),
    "diabetes": (demo_models.diabetes_regressor, "Diabetes progression regressor (10 features)."),
}


class Command(BaseCommand):
    help = "Seed the demo: organisation, staff user, models (idempotent) and a new API key (printed once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--quiet-key", action="store_true", help="Print only the key, for scripts.")

    def handle(self, *args: Any, quiet_key: bool = False, **options: Any) -> None:
        organisation = services.organisation_get_or_create(name="Demo Org", slug="demo")
        user = self._staff_user(announce=not quiet_key)
        services.membership_ensure(user=user, organisation=organisation, role=Membership.Role.OWNER)
        for name, (build, description) in DEMO_MODELS.items():
            self._ensure_model(name, build, description, announce=not quiet_key)
        _, key = services.api_key_create(organisation=organisation, name="demo key")
        if quiet_key:
            self.stdout.write(key)
            return
        self.stdout.write(self.style.SUCCESS("Demo ready. Your API key (shown once):"))
        self.stdout.write(f"\n    {key}\n")
        self.stdout.write("Try:\n")
        self.stdout.write(
            f"    curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
            "-d '{\"instances\": [[5.1, 3.5, 1.4, 0.2]]}' "
            f"http://{os.environ.get('GUNICORN_BIND', '127.0.0.1:8000')}/v1/models/iris:predict\n"
        )

    def _staff_user(self, *, announce: bool) -> Any:
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.com"}
        )
        if created:
            chosen = os.environ.get("DEMO_ADMIN_PASSWORD", "")
            password = chosen or secrets.token_urlsafe(12)
            user.set_password(password)
            user.save()
            if announce:  # a password the operator chose is theirs already: never echo it into logs
                shown = "the one in DEMO_ADMIN_PASSWORD" if chosen else password
                self.stdout.write(f"Staff user 'admin' created with password: {shown}")
        return user

    def _ensure_model(self, name: str, build: Any, description: str, *, announce: bool) -> None:
        # An existing demo model keeps its owner: staff may have made it private, which is theirs to decide.
        model = model_for_upload(name=name, organisation_id=None, description=description)
        if model.versions.filter(status=ModelVersion.Status.READY).exists():
            return
        version = model_version_register(model=model, content=build(), aliases=["production"])
        if announce:
            self.stdout.write(f"Registered {name} v{version.number}: {version.status} {version.failure_reason}")
