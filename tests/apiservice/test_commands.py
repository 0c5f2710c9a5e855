from io import StringIO

from django.contrib.auth import authenticate
from django.core.management import call_command

from apiservice.auth import authenticate_key
from apiservice.models import APIKey, Organisation
from models_registry.models import MLModel, ModelVersion


def test_seed_demo_is_idempotent_but_prints_a_fresh_key_each_time(db):
    first, second = StringIO(), StringIO()
    call_command("seed_demo", "--quiet-key", stdout=first)
    call_command("seed_demo", "--quiet-key", stdout=second)
    keys = [first.getvalue().strip(), second.getvalue().strip()]
    assert keys[0] != keys[1]
    assert Organisation.objects.filter(slug="demo").count() == 1
    assert ModelVersion.objects.filter(model__name="iris").count() == 1
    assert set(ModelVersion.objects.values_list("status", flat=True)) == {"ready"}
    assert APIKey.objects.filter(organisation__slug="demo").count() == 2
    for key in keys:
        assert authenticate_key(f"Bearer {key}").organisation_id == Organisation.objects.get(slug="demo").pk


def test_seed_demo_prints_a_working_curl_line(db):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "curl -s -H 'Authorization: Bearer mm_" in out.getvalue()
    assert "/v1/models/iris:predict" in out.getvalue()


def test_seed_demo_never_prints_an_admin_password_the_operator_chose(db, monkeypatch):
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "chosen-by-ops-7f3a")
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "chosen-by-ops-7f3a" not in out.getvalue()
    assert "DEMO_ADMIN_PASSWORD" in out.getvalue()
    assert authenticate(username="admin", password="chosen-by-ops-7f3a") is not None


def test_seed_demo_runs_after_staff_made_a_demo_model_private(db):
    """`make run` seeds every time: it ended in a traceback (422, another owner) once staff had made iris private."""
    call_command("seed_demo", "--quiet-key", stdout=StringIO())
    owner = Organisation.objects.create(name="Acme", slug="acme")
    MLModel.objects.filter(name="iris").update(organisation=owner)
    out = StringIO()
    call_command("seed_demo", "--quiet-key", stdout=out)
    assert MLModel.objects.get(name="iris").organisation_id == owner.pk  # left as staff set it
    assert APIKey.objects.count() == 2
