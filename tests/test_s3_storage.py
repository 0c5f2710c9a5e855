"""The product on S3-compatible storage (STORAGE_BACKEND=s3): moto's S3 server, a real Celery worker on it.

Models are registered into the bucket (by `register_model` and by the staff API), served online from
the model cache, a batch runs end to end in the worker, an edge bundle is built and downloaded, and
the portal lists and serves the batch's files: every byte goes through the S3 API, none through a
local media folder.
"""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client

from apiservice.celery import app as celery_app
from apiservice.models import Membership
from apiservice.storage import s3_storage
from batches import storage
from batches.formats import iter_lines
from batches.models import Batch, File
from edge.models import Bundle
from models_registry.models import ModelVersion
from models_registry.selectors import model_version_local_path
from tests import live
from tests.batches.conftest import WORKER_ENV, content, create, json_lines, jsonl, upload, wait
from tests.conftest import APIClient, model_bytes
from tests.portal.conftest import client_as, make_user

pytestmark = [pytest.mark.live]

BUCKET = "modelmeter-test"
REGION = "us-east-1"
# Dummy credentials: boto3 reads them from the environment, as in production; moto accepts any.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "modelmeter-test", "AWS_SECRET_ACCESS_KEY": "modelmeter-test-secret"}


@dataclass
class S3:
    endpoint_url: str
    media_root: Path

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION)

    def objects(self, prefix: str = "") -> set[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def read(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def env(self) -> dict[str, str]:
        """The settings' environment for STORAGE_BACKEND=s3 on this server."""
        return {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "S3_REGION": REGION,
            **CREDENTIALS,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, _media_root: Path) -> Iterator[S3]:
    """moto's S3 server on a free port, with an empty bucket; missing moto fails here, it never skips."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    port = live.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        live.wait_http(url + "/moto-api/", process=process)
        server = S3(endpoint_url=url, media_root=_media_root)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        live.stop(process)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def s3_worker(
    s3_server: S3, django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Celery worker on STORAGE_BACKEND=s3 with a queue of its own (other tests' workers use local disk)."""
    queue = f"s3-{os.getpid()}"
    cache = tmp_path_factory.mktemp("worker-model-cache")
    with (
        django_db_blocker.unblock(),
        live.celery_worker(
            tmp_path_factory.mktemp("s3-celery"),
            concurrency=2,
            name="s3",
            CELERY_TASK_DEFAULT_QUEUE=queue,
            MODEL_CACHE_DIR=str(cache),
            MEDIA_ROOT=str(tmp_path_factory.mktemp("worker-media-unused")),
            **WORKER_ENV,
            **s3_server.env(),
        ),
    ):
        yield queue


@pytest.fixture
def on_s3(s3_server: S3, settings: Any, tmp_path: Path) -> S3:
    """This process's default storage is the bucket (as settings build it for STORAGE_BACKEND=s3)."""
    default = s3_storage(bucket=BUCKET, endpoint_url=s3_server.endpoint_url, region=REGION)
    settings.STORAGES = {**settings.STORAGES, "default": default}
    settings.MODEL_CACHE_DIR = tmp_path / "model-cache"
    settings.MEDIA_ROOT = str(tmp_path / "media-unused")
    settings.BATCH_MIN_COMPLETION_WINDOW_SECONDS = 1
    return s3_server


@pytest.fixture
def s3_queue(s3_worker: str) -> Iterator[str]:
    """Tasks queued here go to the S3 worker."""
    before = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = s3_worker
    yield s3_worker
    celery_app.conf.task_default_queue = before


def _nothing_local(tmp_path: Path) -> None:
    """No media file was written to local disk by this process (MEDIA_ROOT points at an unused folder)."""
    assert not (tmp_path / "media-unused").exists()


def test_register_model_stores_the_file_in_the_bucket_and_it_serves_online(on_s3, api, tmp_path):
    path = tmp_path / "iris.onnx"
    path.write_bytes(model_bytes("iris"))
    call_command("register_model", "s3-iris", str(path), "--alias", "production", stdout=io.StringIO())
    version = ModelVersion.objects.get(model__name="s3-iris")
    assert version.file.name in on_s3.objects()
    assert hashlib.sha256(on_s3.read(version.file.name)).hexdigest() == version.sha256
    response = api.post_json("/v1/models/s3-iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert response.status_code == 200, response.content
    assert len(response.json()["predictions"]) == 1
    cached = tmp_path / "model-cache" / f"{version.sha256}.onnx"  # ONNX Runtime loads a local copy
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == version.sha256
    _nothing_local(tmp_path)


def test_processes_that_first_need_a_version_together_each_get_the_whole_file(on_s3, iris, tmp_path):
    """Each round, four threads copy the version out of the bucket into an empty cache at once."""
    for _ in range(5):
        shutil.rmtree(tmp_path / "model-cache", ignore_errors=True)
        start = threading.Barrier(4)

        def first_use(start: threading.Barrier) -> Path:
            start.wait()
            return model_version_local_path(version=iris)

        with ThreadPoolExecutor(4) as pool:
            paths = set(pool.map(first_use, [start] * 4))
        assert paths == {tmp_path / "model-cache" / f"{iris.sha256}.onnx"}
        assert hashlib.sha256(paths.pop().read_bytes()).hexdigest() == iris.sha256
        assert [path.name for path in (tmp_path / "model-cache").iterdir()] == [f"{iris.sha256}.onnx"]


def test_reading_a_large_stored_file_holds_only_a_bounded_part_of_it_in_memory(on_s3, tmp_path):
    """What batch validation parts and downloads do: open a stored file and read it in blocks."""
    source = tmp_path / "large.jsonl"
    with open(source, "wb") as out:
        for block in range(80):
            out.write(bytes([block]) * 1024 * 1024)
    with open(source, "rb") as handle:
        name = default_storage.save("large/input.jsonl", DjangoFile(handle))
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with default_storage.open(name, "rb") as stored:
            while block := stored.read(1024 * 1024):
                digest.update(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(source.read_bytes()).hexdigest()
    # boto3 downloads parts on 10 threads through a queue of up to 25 MiB: bounded, but not small.
    assert peak < 56 * 1024 * 1024, f"{peak / 2**20:.0f} MiB in memory to read an 80 MiB file"


def test_a_batch_task_reads_its_range_of_a_large_input_without_downloading_the_rest(on_s3, tmp_path):
    """What a validation part or a chunk does: seek into the input file and read a few lines there."""
    line = b'{"custom_id": "x", "instances": [[0.0]]}\n'
    source = tmp_path / "input.jsonl"
    source.write_bytes(line * (80 * 1024 * 1024 // len(line)))
    with open(source, "rb") as handle:
        name = default_storage.save("large/ranged.jsonl", DjangoFile(handle))
    offset = len(line) * 1_000_000
    tracemalloc.start()
    try:
        with storage.open_read(name) as stream:
            lines = list(islice(iter_lines(stream, offset=offset, length=len(line) * 3), 3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [raw.data + b"\n" for raw in lines] == [line] * 3
    assert [raw.offset for raw in lines] == [offset, offset + len(line), offset + 2 * len(line)]
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.0f} MiB in memory to read 3 lines of an 80 MiB file"


def test_staff_upload_stores_the_version_in_the_bucket_and_it_serves_on_the_v2_face(on_s3, staff_user, api, tmp_path):
    staff = Client()
    staff.force_login(staff_user)
    response = staff.post(
        "/v1/staff/models/s3-diabetes/versions",
        {"file": SimpleUploadedFile("m.onnx", model_bytes("diabetes")), "aliases": "production"},
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "ready"
    version = ModelVersion.objects.get(model__name="s3-diabetes")
    assert hashlib.sha256(on_s3.read(version.file.name)).hexdigest() == version.sha256
    body = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.01] * 10}]}
    inferred = api.post_json("/v2/models/s3-diabetes/infer", body)
    assert inferred.status_code == 200, inferred.content
    _nothing_local(tmp_path)


def test_a_batch_runs_in_the_worker_and_its_files_download_from_the_api_and_the_portal(
    on_s3, s3_queue, transactional_db, api, org, diabetes, tmp_path
):
    data = jsonl(120).splitlines()
    data[7] = b"not json"
    file = upload(api, b"\n".join(data) + b"\n")
    assert File.objects.get(uid=file["id"]).storage_name in on_s3.objects()
    done = wait(api, create(api, file["id"])["id"], timeout=60)
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 120, "completed": 119, "failed": 1}
    outputs = json_lines(content(api, done["output_file_id"]))
    assert [line["custom_id"] for line in outputs] == [f"req-{i}" for i in range(120) if i != 7]
    errors = json_lines(content(api, done["error_file_id"]))
    assert [error["line"] for error in errors] == [8]
    record = Batch.objects.get(uid=done["id"])
    stored = on_s3.objects()
    for name in (record.input_file.storage_name, record.output_file.storage_name, record.error_file.storage_name):
        assert name in stored
    portal = client_as(make_user("s3-owner", org, Membership.Role.OWNER))
    listing = portal.get("/portal/batches/")
    assert listing.status_code == 200
    assert f"/portal/files/{record.output_file.uid}/download/" in listing.content.decode()
    download = portal.get(f"/portal/files/{record.output_file.uid}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == on_s3.read(record.output_file.storage_name)
    # The chunks' parts were joined and removed (by the worker, once the batch's completion committed):
    # the batch's folder holds its two files.
    prefix = f"batches/{org.pk}/{record.uid}/"
    finals = {record.output_file.storage_name, record.error_file.storage_name}
    deadline = time.monotonic() + 30
    while on_s3.objects(prefix) != finals and time.monotonic() < deadline:
        time.sleep(0.2)
    assert on_s3.objects(prefix) == finals
    assert api.delete(f"/v1/files/{done['output_file_id']}").status_code in (200, 204)
    assert record.output_file.storage_name not in on_s3.objects()
    _nothing_local(tmp_path)


def test_an_edge_bundle_builds_in_the_worker_into_the_bucket_and_downloads(
    on_s3, s3_queue, transactional_db, api, org, iris, tmp_path
):
    response = api.post_json("/v1/models/iris/versions/1/bundles", {"variants": ["fp32"]})
    assert response.status_code == 202, response.content
    bundle_id = response.json()["id"]
    body = _wait_bundle(api, bundle_id)
    assert body["status"] == "ready", body
    bundle = Bundle.objects.get(public_id=bundle_id)
    assert bundle.file.name in on_s3.objects()
    grant = api.get(f"/v1/bundles/{bundle_id}/download").json()
    url = urlsplit(grant["url"])
    downloaded = APIClient().get(f"{url.path}?{url.query}")
    assert downloaded.status_code == 200
    data = b"".join(downloaded.streaming_content)
    assert hashlib.sha256(data).hexdigest() == grant["sha256"]
    assert data == on_s3.read(bundle.file.name)
    ranged = APIClient().get(f"{url.path}?{url.query}", HTTP_RANGE="bytes=10-19")
    assert ranged.status_code == 206
    assert b"".join(ranged.streaming_content) == data[10:20]
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    portal = client_as(make_user("s3-bundler", org, Membership.Role.OWNER))
    assert bundle_id in portal.get("/portal/bundles/").content.decode()
    redirect = portal.post(f"/portal/bundles/{bundle_id}/download/")
    assert redirect.status_code == 302
    assert b"".join(portal.get(redirect["Location"]).streaming_content) == data
    _nothing_local(tmp_path)


def _wait_bundle(api: APIClient, bundle_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/v1/bundles/{bundle_id}").json()
        if body["status"] in ("ready", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.2)
