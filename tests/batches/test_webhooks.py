"""Webhooks: Standard Webhooks signatures (checked with the independent `standardwebhooks` library),
retries with a delivery log, and the SSRF guard at creation and at send time."""

import json
import time

import pytest
from standardwebhooks import Webhook

from batches import webhooks
from batches.models import WebhookAttempt, WebhookDelivery

from .conftest import create, jsonl, upload, wait

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://[::1]/hook",
    "http://[fd00:ec2::254]/hook",
    "http://0.0.0.0/hook",
    "http://name-that-does-not-resolve.invalid/hook",
    "ftp://example.com/hook",
    "http://user:secret@example.com/hook",
    "https://example.com:99999/hook",  # no such port (was a 500)
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address
    "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize("url", REFUSED)
def test_it_refuses_non_public_webhook_targets(settings, url):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    with pytest.raises(webhooks.UnsafeURL):
        webhooks.webhook_target(url)


def test_it_never_admits_a_metadata_address_even_when_its_network_is_allowed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["169.254.0.0/16", "127.0.0.1/32"]
    with pytest.raises(webhooks.UnsafeURL):
        webhooks.webhook_target("http://169.254.169.254/")
    assert webhooks.webhook_target("http://127.0.0.1:9/x?y=1").path == "/x?y=1"


def test_it_refuses_a_batch_with_a_private_webhook_url(api, diabetes, settings, no_queue):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    file = upload(api, jsonl(2))
    response = api.post_json(
        "/v1/batches", {"input_file_id": file["id"], "model": "diabetes", "webhook_url": "http://localhost/hook"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhook_url_refused"
    assert response.json()["error"]["param"] == "webhook_url"


def test_a_webhook_url_with_an_impossible_port_is_a_400(api, diabetes, no_queue):
    body = {"input_file_id": upload(api, jsonl(2))["id"], "model": "diabetes"}
    response = api.post_json("/v1/batches", {**body, "webhook_url": "https://example.com:99999/hook"})
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "webhook_url_refused",
        "webhook_url",
    )


def test_it_signs_the_way_standard_webhooks_verifies(org):
    body = b'{"type":"batch.completed"}'
    signature = webhooks.webhook_sign(
        secret=org.webhook_signing_secret, message_id="msg_1", timestamp=1_700_000_000, body=body
    )
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": signature}
    with pytest.raises(Exception, match="timestamp"):  # the library also checks freshness
        Webhook(org.webhook_signing_secret).verify(body, headers)
    assert signature.startswith("v1,")


def test_it_rechecks_the_target_at_send_time(api, diabetes, settings, receiver, no_queue, org):
    file = upload(api, jsonl(2))
    batch = create(api, file["id"], webhook_url=receiver.url)
    from batches.models import Batch

    webhooks.webhook_queue(batch=Batch.objects.get(uid=batch["id"]), event="batch.completed")
    delivery = WebhookDelivery.objects.get()
    settings.WEBHOOK_ALLOWED_NETWORKS = []  # the address is no longer acceptable when the event is sent
    assert webhooks.webhook_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.last_error.startswith("refused")
    assert receiver.requests == []


@pytest.mark.live
def test_it_delivers_a_signed_event_and_retries_after_a_failure(
    transactional_db, batch_worker, api, diabetes, org, receiver
):
    receiver.statuses = [500]
    batch = create(api, upload(api, jsonl(20))["id"], webhook_url=receiver.url)
    done = wait(api, batch["id"])
    assert done["status"] == "completed"
    delivery = WebhookDelivery.objects.get()
    for _ in range(300):
        delivery.refresh_from_db()
        if delivery.status != "pending":
            break
        time.sleep(0.1)
    assert delivery.status == "delivered"
    assert delivery.attempts == 2
    assert list(
        WebhookAttempt.objects.filter(delivery=delivery).order_by("number").values_list("status_code", flat=True)
    ) == [500, 200]
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == delivery.message_id
    payload = Webhook(org.webhook_signing_secret).verify(second["body"], second["headers"])
    assert payload["type"] == "batch.completed"
    assert payload["data"]["id"] == batch["id"]
    assert payload["data"]["request_counts"] == {"total": 20, "completed": 20, "failed": 0}
    assert json.loads(second["body"]) == payload
    assert second["path"] == "/hooks/batches"


def test_it_sends_a_valid_host_header_to_an_ipv6_address(api, diabetes, settings, no_queue):
    """`Host: ::1:8080` is not HTTP (RFC 9110 7.2 wants `[::1]:8080`): a real server answers it 400."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from batches.models import Batch

    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hosts.append(self.headers["Host"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class IPv6Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    server = IPv6Server(("::1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.WEBHOOK_ALLOWED_NETWORKS = ["::1/128"]
        url = f"http://[::1]:{server.server_address[1]}/hook"
        batch = create(api, upload(api, jsonl(2))["id"], webhook_url=url)
        webhooks.webhook_queue(batch=Batch.objects.get(uid=batch["id"]), event="batch.completed")
        assert webhooks.webhook_attempt(delivery_id=WebhookDelivery.objects.get().pk) is None
    finally:
        server.shutdown()
    assert hosts == [f"[::1]:{server.server_address[1]}"]
