import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apiservice.models import APIKey
from apiservice.services import api_key_create, api_key_revoke
from billing.models import UsageRecord
from tests.conftest import APIClient

IRIS = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def _assert_401(response, message_part: str = "") -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert message_part in error["message"]


def test_it_issues_prefixed_high_entropy_keys_and_stores_only_a_hash(org):
    api_key, secret = api_key_create(organisation=org, name="k")
    prefix, _, body = secret.partition(".")
    assert prefix.startswith("mm_") and prefix == api_key.prefix
    assert len(body) == 32  # 32 chars of [A-Za-z0-9]: ~190 bits
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM apiservice_apikey")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert body not in stored and secret not in stored


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Authorization: Bearer"),
        ("Basic dXNlcjpwYXNz", "Authorization: Bearer"),
        ("Bearer not-a-key", "Malformed"),
        ("Bearer mm_AAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "Invalid or revoked"),
    ],
    ids=["missing", "wrong-scheme", "malformed", "unknown"],
)
def test_it_refuses_bad_credentials_with_401(iris, header, message):
    client = APIClient(HTTP_AUTHORIZATION=header) if header else APIClient()
    _assert_401(client.post_json("/v1/models/iris:predict", IRIS), message)
    assert UsageRecord.objects.count() == 0  # unauthenticated calls are not anybody's usage


def test_it_refuses_a_key_with_a_wrong_secret(org, iris):
    _, secret = api_key_create(organisation=org, name="k")
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    _assert_401(APIClient(forged).post_json("/v1/models/iris:predict", IRIS), "Invalid")


def test_it_refuses_a_revoked_key(org, iris):
    api_key, secret = api_key_create(organisation=org, name="k")
    client = APIClient(secret)
    assert client.post_json("/v1/models/iris:predict", IRIS).status_code == 200
    api_key_revoke(api_key=api_key)
    _assert_401(client.post_json("/v1/models/iris:predict", IRIS), "revoked")
    assert APIKey.objects.get(pk=api_key.pk).revoked_at is not None


def test_it_refuses_an_expired_key(org, iris):
    _, secret = api_key_create(organisation=org, name="k", expires_at=timezone.now() - timedelta(seconds=1))
    _assert_401(APIClient(secret).post_json("/v1/models/iris:predict", IRIS), "expired")


def test_it_forbids_a_key_without_the_needed_scope(org, iris):
    _, secret = api_key_create(organisation=org, name="k", scopes=["batch"])
    response = APIClient(secret).post_json("/v1/models/iris:predict", IRIS)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"
    assert "'predict'" in response.json()["error"]["message"]
    usage = APIClient(secret).get("/v1/usage")
    assert usage.status_code == 403


def test_it_lets_any_valid_key_read_the_catalogue(org, iris):
    _, secret = api_key_create(organisation=org, name="k", scopes=[])
    assert APIClient(secret).get("/v1/models").status_code == 200


def test_it_records_when_a_key_was_last_used(org, iris):
    api_key, secret = api_key_create(organisation=org, name="k")
    assert api_key.last_used_at is None
    APIClient(secret).get("/v1/models")
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


@pytest.mark.live
def test_a_revoked_key_stops_working_within_a_second_on_a_live_server(transactional_db, live_gunicorn, org, iris):
    import urllib.error
    import urllib.request

    api_key, secret = api_key_create(organisation=org, name="k")

    def status() -> int:
        request = urllib.request.Request(
            live_gunicorn.url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert {status() for _ in range(10)} == {200}  # both workers have the key cached now
    api_key_revoke(api_key=api_key)
    time.sleep(1.0)
    assert {status() for _ in range(10)} == {401}
