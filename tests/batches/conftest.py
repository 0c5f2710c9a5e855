"""Batch fixtures: a Celery worker with small chunks, uploads, waiting, and a local webhook receiver."""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

# Settings the worker subprocess runs with: chunks of 50 rows and validation parts of 4 KiB so small
# files still make many of both,
# fast broker redelivery for the worker-kill test, quick webhook retries, and loopback webhooks allowed.
WORKER_ENV = {
    "BATCH_CHUNK_ROWS": "50",
    "BATCH_SUB_BATCH_ROWS": "16",
    "BATCH_VALIDATION_PART_BYTES": "4096",
    "BATCH_MIN_COMPLETION_WINDOW_SECONDS": "1",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    "WEBHOOK_BACKOFF_SECONDS": "0.2",
    "WEBHOOK_TIMEOUT_SECONDS": "5",
    "CELERY_VISIBILITY_TIMEOUT": "10",
    "CELERY_UNACKED_RESTORE_INTERVAL": "1",
    "CELERY_UNACKED_RESTORE_THROTTLE": "1",
}
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="session")
def batch_worker(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A real Celery worker (prefork, 2 processes) on the test database, with WORKER_ENV."""
    from tests import live

    with (
        django_db_blocker.unblock(),
        live.celery_worker(
            tmp_path_factory.mktemp("batch-celery"), concurrency=2, name="batch", **WORKER_ENV
        ) as worker,
    ):
        yield worker


@pytest.fixture(autouse=True)
def _api_settings(settings: Any) -> None:
    """The in-process API sees the same limits as the worker."""
    settings.BATCH_MIN_COMPLETION_WINDOW_SECONDS = 1
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


def rows(count: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).normal(0, 0.05, size=(count, 10)).round(5).tolist()


def jsonl(count: int, *, seed: int = 0, prefix: str = "req") -> bytes:
    return b"".join(
        json.dumps({"custom_id": f"{prefix}-{i}", "instances": [row]}).encode() + b"\n"
        for i, row in enumerate(rows(count, seed))
    )


def csv_text(count: int, *, seed: int = 0, custom_id: bool = True) -> bytes:
    header = (["custom_id"] if custom_id else []) + [f"input_{i}" for i in range(10)]
    lines = [",".join(header)]
    for i, row in enumerate(rows(count, seed)):
        lines.append(",".join(([f"row-{i}"] if custom_id else []) + [str(v) for v in row]))
    return ("\n".join(lines) + "\n").encode()


def upload(api: Any, content: bytes, name: str = "input.jsonl") -> dict[str, Any]:
    response = api.post("/v1/files", {"file": SimpleUploadedFile(name, content), "purpose": "batch"})
    assert response.status_code == 201, response.content
    return response.json()


def create(api: Any, file_id: str, **extra: Any) -> dict[str, Any]:
    headers = {}
    if "idempotency_key" in extra:
        headers["HTTP_IDEMPOTENCY_KEY"] = extra.pop("idempotency_key")
    response = api.post_json("/v1/batches", {"input_file_id": file_id, "model": "diabetes", **extra}, **headers)
    assert response.status_code in (200, 201), response.content
    return response.json()


def wait(api: Any, batch_id: str, until: set[str] | None = None, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/v1/batches/{batch_id}").json()
        if body["status"] in (until or TERMINAL):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"batch stuck in {body['status']}: {body}")
        time.sleep(0.2)


def content(api: Any, file_id: str) -> bytes:
    response = api.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@dataclass
class Receiver:
    url: str
    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A tiny HTTP server on 127.0.0.1 recording webhook posts; answers with `statuses` in turn, then 200."""
    from tests.live import free_port

    port = free_port()
    state = Receiver(url=f"http://127.0.0.1:{port}/hooks/batches", statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append(
                {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "path": self.path}
            )
            self.send_response(state.statuses.pop(0) if state.statuses else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_queue(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """In-process API tests with no worker: record the validations that would be queued."""
    queued: list[int] = []
    monkeypatch.setattr("batches.tasks.batch_validate.delay", queued.append)
    monkeypatch.setattr("batches.tasks.webhook_deliver.delay", lambda *_: None)
    return queued


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Run a batch's tasks here, by hand (`run`); nothing is queued."""
    monkeypatch.setattr("batches.tasks.batch_validate.delay", lambda *_: None)
    monkeypatch.setattr("batches.tasks.batch_finalize.delay", lambda *_: None)
    monkeypatch.setattr("batches.tasks.webhook_deliver.delay", lambda *_: None)


def run(uid: str) -> Any:
    """What the Celery worker does: validate, run every chunk, finalise (use with `in_process`)."""
    from batches import execution, validation
    from batches.models import Batch, BatchChunk, BatchPart

    batch = Batch.objects.get(uid=uid)
    validation.batch_validate(batch_id=batch.pk)
    for part in BatchPart.objects.filter(batch=batch):
        validation.part_validate(part_id=part.pk)
    validation.batch_validate_finish(batch_id=batch.pk)
    for chunk in BatchChunk.objects.filter(batch=batch).order_by("index"):
        execution.chunk_run(chunk_id=chunk.pk)
    execution.batch_finalize(batch_id=batch.pk)
    return Batch.objects.get(pk=batch.pk)
