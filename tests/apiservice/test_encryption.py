import pytest
from django.db import connection

from apiservice.encryption import decrypt, encrypt
from apiservice.models import Organisation


def test_the_webhook_secret_is_encrypted_at_rest(org):
    plaintext = org.webhook_signing_secret
    assert plaintext.startswith("whsec_")
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_secret FROM apiservice_organisation WHERE id = %s", [org.pk])
        (stored,) = cursor.fetchone()
    assert plaintext not in stored
    assert decrypt(stored) == plaintext


def test_each_organisation_gets_its_own_secret(org, other_org):
    assert org.webhook_signing_secret != other_org.webhook_signing_secret


def test_a_value_from_another_key_is_refused_clearly(settings, db):
    token = encrypt("whsec_abc")
    settings.FIELD_ENCRYPTION_KEY = "a-rotated-key"
    with pytest.raises(ValueError, match="another key"):
        decrypt(token)
    assert Organisation.objects.count() == 0
