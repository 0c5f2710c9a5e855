import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.test import RequestFactory, override_settings
from django.utils import timezone

from apiservice.auth import authenticate_key
from billing import gateway, idempotency, limits
from billing.models import IdempotencyRecord, UsageRecord
from tests.billing.conftest import IRIS_ROW
from tests.live import free_port

pytestmark = pytest.mark.usefixtures("default_free_plan")

PREDICT = "/v1/models/iris:predict"
BODY = {"instances": [IRIS_ROW, IRIS_ROW]}


def send(api, body=BODY, key="key-1", path=PREDICT):
    return api.post_json(path, body, HTTP_IDEMPOTENCY_KEY=key)


def forget_claims():
    client = limits.link.client()
    client.delete(*client.scan_iter(match="mm:idem:*"))


def billed_units():
    return sum(UsageRecord.objects.values_list("units", flat=True))


def test_it_replays_the_first_response_and_bills_once(api, iris):
    first = send(api)
    second = send(api)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert second["X-Model-Version"] == first["X-Model-Version"]
    assert billed_units() == 2
    assert UsageRecord.objects.filter(face="idempotent-replay", units=0).count() == 1


def test_it_answers_422_for_the_same_key_with_another_body(api, iris):
    send(api)
    response = send(api, body={"instances": [IRIS_ROW]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert billed_units() == 2


def test_the_422_for_the_same_body_on_another_path_does_not_blame_the_body(api, iris):
    """The same body sent to another version's :predict was told "used with a different request body"."""
    send(api)
    response = send(api, path="/v1/models/iris/versions/1:predict")
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "This Idempotency-Key was used with a different request (method, path or body)."
    )


def admit_without_answering(api_key, key="key-1", body=BODY):
    """Take a request through the gateway's admission (claim, quota) and leave it running."""
    request = RequestFactory().post(
        PREDICT, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
    )
    request.principal = authenticate_key(f"Bearer {api_key}")
    assert gateway.admit(request) is None
    return request


def test_it_answers_409_with_retry_after_while_the_first_is_in_flight(api, api_key, iris):
    admit_without_answering(api_key)
    response = send(api)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_in_progress"
    assert response["Retry-After"] == "1"
    assert billed_units() == 0


def test_it_replays_a_4xx_answer_too(api, iris):
    bad = {"instances": [[1.0]]}
    assert send(api, body=bad).status_code == 400
    replay = send(api, body=bad)
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (400, "true")


def test_it_keys_per_organisation(api, client_for, other_key, iris):
    send(api)
    assert "Idempotent-Replayed" not in send(client_for(other_key))
    assert billed_units() == 4


def test_it_forgets_keys_after_24_hours(api, iris):
    send(api)
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    with override_settings(BILLING_REDIS_URL=""):  # the Redis claim would be long gone by then
        response = send(api)
    assert "Idempotent-Replayed" not in response
    assert billed_units() == 4
    assert idempotency.idempotency_purge() == 0  # the record was taken over, not left behind


def test_it_does_not_store_refusals(api, api_key, iris):
    from tests.billing.conftest import free_quota

    free_quota("online_predictions", 0)
    assert send(api).status_code == 429
    free_quota("online_predictions", 10)
    response = send(api)
    assert response.status_code == 200
    assert "Idempotent-Replayed" not in response


def test_it_works_from_the_database_when_redis_is_down(api, org, iris):
    with override_settings(BILLING_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        first = send(api)
        second = send(api)
        mismatch = send(api, body={"instances": [IRIS_ROW]})
    assert (first.status_code, second["Idempotent-Replayed"], mismatch.status_code) == (200, "true", 422)
    assert billed_units() == 2


def test_it_answers_409_from_the_database_while_in_flight(api, org, iris):
    IdempotencyRecord.objects.create(organisation=org, key="key-1", fingerprint="x" * 64)
    with override_settings(BILLING_REDIS_URL=""):
        assert send(api).status_code == 422  # other body
        IdempotencyRecord.objects.update(
            fingerprint=idempotency.fingerprint_of(
                RequestFactory().post(PREDICT, data=json.dumps(BODY), content_type="application/json")
            )
        )
        assert send(api).status_code == 409


def test_it_stores_the_answer_with_the_ledger_row(api, iris):
    response = send(api)
    record = IdempotencyRecord.objects.get(key="key-1")
    row = UsageRecord.objects.get()
    assert (record.done, record.status_code, bytes(record.body)) == (True, 200, response.content)
    assert record.created_at == row.created_at  # written by the same statement


def test_it_takes_over_a_claim_whose_worker_crashed(api, api_key, iris):
    stale = admit_without_answering(api_key)
    assert send(api).status_code == 409
    claim = stale.billing.claim
    marker = f"P:{claim.fingerprint}:{int(time.time()) - idempotency.CLAIM_SECONDS - 1}"
    limits.link.client().set(claim.redis_key, marker)
    response = send(api)
    assert response.status_code == 200
    assert "Idempotent-Replayed" not in response
    assert send(api)["Idempotent-Replayed"] == "true"
    assert billed_units() == 2


def test_a_loser_whose_claim_redis_forgot_answers_with_the_winners_response(api, api_key, iris):
    first = send(api)
    forget_claims()  # Redis restarted: the claim is gone, the database still has the answer
    second = send(api)
    assert second.status_code == 200
    assert (second.content, second["Idempotent-Replayed"]) == (first.content, "true")
    assert billed_units() == 2
    loser = UsageRecord.objects.get(units=0)
    assert (loser.face, loser.meter, loser.status_code) == ("idempotent-replay", "", 200)


def test_a_loser_with_another_body_gets_422_and_no_units(api, iris):
    send(api)
    forget_claims()
    response = send(api, body={"instances": [IRIS_ROW]})
    assert response.status_code == 422
    assert billed_units() == 2


def test_it_rejects_an_overlong_key(api, iris):
    response = send(api, key="k" * 256)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Idempotency-Key"


def test_it_applies_to_the_v2_face(api, iris):
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}
    first = send(api, body=body, path="/v2/models/iris/infer")
    second = send(api, body=body, path="/v2/models/iris/infer")
    assert first.status_code == 200, first.content
    assert second["Idempotent-Replayed"] == "true"
    assert billed_units() == 1


def test_it_replays_a_binary_oip_answer_with_its_header_length(api, iris):
    """tritonclient retrying with the same key must be able to split the replayed JSON head from its tensors."""
    import tritonclient.http as httpclient

    body = {
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}],
        "parameters": {"binary_data_output": True},
    }
    first = send(api, body=body, path="/v2/models/iris/infer")
    second = send(api, body=body, path="/v2/models/iris/infer")
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert second["Inference-Header-Content-Length"] == first["Inference-Header-Content-Length"]
    length = int(second["Inference-Header-Content-Length"])
    replayed = httpclient.InferResult.from_response_body(second.content, header_length=length)
    assert replayed.as_numpy("label").tolist() == [b"setosa"]


def test_it_bills_one_of_20_concurrent_identical_requests(transactional_db, live_gunicorn, api_key, iris):
    def call(_: int) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(
            live_gunicorn.url + PREDICT,
            data=json.dumps(BODY).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Idempotency-Key": "concurrent-1",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(call, range(20)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 409}, statuses
    assert all(headers["Retry-After"] == "1" for status, headers in results if status == 409)
    status, headers = call(0)
    assert (status, headers.get("Idempotent-Replayed")) == (200, "true")
    billed = UsageRecord.objects.filter(units__gt=0)
    assert billed.count() == 1
    assert billed.get().units == 2
    assert UsageRecord.objects.count() == 21


def test_a_key_without_the_predict_scope_never_gets_a_replay(org, iris, client_for):
    from apiservice.services import api_key_create

    _, predictor = api_key_create(organisation=org, name="predicts", scopes=["predict"])
    _, reader = api_key_create(organisation=org, name="reads usage", scopes=["usage"])
    assert send(client_for(predictor), key="shared").status_code == 200
    refused = send(client_for(reader), key="shared")
    assert refused.status_code == 403
    assert "Idempotent-Replayed" not in refused
    assert "predictions" not in refused.content.decode()


def test_a_refusal_for_scope_is_not_stored_for_the_key(org, iris, client_for):
    from apiservice.services import api_key_create

    _, reader = api_key_create(organisation=org, name="reads usage", scopes=["usage"])
    _, predictor = api_key_create(organisation=org, name="predicts", scopes=["predict"])
    assert send(client_for(reader), key="first-try").status_code == 403
    answered = send(client_for(predictor), key="first-try")
    assert answered.status_code == 200, answered.content
    assert "Idempotent-Replayed" not in answered
    assert not IdempotencyRecord.objects.filter(status_code=403).exists()


def test_redis_keeps_a_claim_minutes_not_the_whole_day(api, iris):
    send(api)
    (claim,) = limits.link.client().scan_iter(match="mm:idem:*")
    assert idempotency.CLAIM_SECONDS < limits.link.client().ttl(claim) <= 600


@override_settings(IDEMPOTENCY_CLAIM_SECONDS=120)
def test_a_retry_after_its_claim_expired_replays_the_stored_answer_and_bills_nothing(api, iris):
    first = send(api)
    (claim,) = limits.link.client().scan_iter(match="mm:idem:*")
    assert limits.link.client().ttl(claim) <= 120
    forget_claims()  # what the expiry does
    retry = send(api)
    assert (retry.status_code, retry.content, retry["Idempotent-Replayed"]) == (200, first.content, "true")
    assert billed_units() == 2
