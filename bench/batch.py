"""Batch benchmark: N rows of the diabetes forest through the real API and Celery worker(s).

    make bench-batch                       # 1,000,000 rows, 1 and 2 workers, plus the RSS check at 100k
    .venv/bin/python bench/batch.py --rows 100000 --workers 1 2

In the same run it measures the single-process limit: one Python loop that reads the same file,
checks and parses it with the same parser (its fast path), runs ONNX Runtime at the same sub-batch
size and writes the same output file with the same writer. Then each worker count runs the whole
job through gunicorn + Celery + PostgreSQL + Redis: upload, create, wait for `completed`, download.
Peak RSS is each worker pool process's VmHWM (the kernel's high-water mark), read just before the
worker stops.

Needs PostgreSQL and Redis: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/modelmeter_bench,
created if missing) and REDIS_URL (default redis://127.0.0.1:6379/0; the database index is
TEST_REDIS_DB_BASE, default 1, as in the test settings).
"""

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="bench-batch-"))
os.environ.setdefault(
    "DATABASE_URL", os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/modelmeter_bench")
)
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
os.environ["MEDIA_ROOT"] = str(WORK / "media")
os.environ["DJANGO_SETTINGS_MODULE"] = "apiservice.settings_test"


def _create_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, _, name = url.rpartition("/")
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


_create_database()

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from procstat import children, cpu_seconds  # noqa: E402

from apiservice import services as org_services  # noqa: E402
from apiservice.models import ALL_SCOPES  # noqa: E402
from batches.formats import JSONLParser, Request, iter_lines, output_lines, parser_for  # noqa: E402
from inference import runtime  # noqa: E402
from models_registry import demo_models  # noqa: E402
from models_registry.services import model_get_or_create, model_version_register  # noqa: E402
from tests import live  # noqa: E402

MODEL = "bench-diabetes-forest"


def make_file(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "wb") as out:
        for start in range(0, rows, 10_000):
            block = rng.normal(0, 0.05, size=(min(10_000, rows - start), 10)).round(5).tolist()
            out.write(
                b"".join(
                    json.dumps({"custom_id": f"r{start + i}", "instances": [row]}).encode() + b"\n"
                    for i, row in enumerate(block)
                )
            )


def single_process(path: Path, out_path: Path, version: Any, sub_batch: int) -> tuple[float, float]:
    """The limit: read, check and parse, run ORT in sub-batches, write the same output lines, in one loop.

    It does what validation plus the chunks do, the fastest way they know: the parser's fast path with
    the rows of a sub-batch stacked in one array, one ORT call per sub-batch, `output_lines` for its
    output in one write. Like a worker process (apiservice/celery.py), it runs with the start-up heap
    frozen out of the cyclic GC.
    """
    gc.freeze()
    try:
        return _single_process(path, out_path, version, sub_batch)
    finally:
        gc.unfreeze()


def _single_process(path: Path, out_path: Path, version: Any, sub_batch: int) -> tuple[float, float]:
    started, cpu_started = time.perf_counter(), time.process_time()
    session = runtime.new_session(runtime_path(version), intra_op_threads=settings.ORT_INTRA_OP_THREADS)
    names = [o.name for o in session.get_outputs()]
    parser = parser_for("jsonl", version.signature, max_rows=settings.INFERENCE_MAX_ROWS, nan_policy="reject")
    assert isinstance(parser, JSONLParser) and parser.fast
    with open(path, "rb") as stream, open(out_path, "wb") as out:
        group = _Group()
        for line in iter_lines(stream):
            parsed = parser.parse_rows(line)
            assert not isinstance(parsed, Request), "the bench file is all fast-path lines"
            group.add(line.number, *parsed)
            if len(group.values) >= sub_batch:
                _run(session, names, parser, group, out)
                group = _Group()
        if group.numbers:
            _run(session, names, parser, group, out)
    return time.perf_counter() - started, time.process_time() - cpu_started


class _Group:
    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.custom_ids: list[str] = []
        self.rows: list[int] = []
        self.values: list[list[float]] = []

    def add(self, number: int, custom_id: str, rows: list[list[float]]) -> None:
        self.numbers.append(number)
        self.custom_ids.append(custom_id)
        self.rows.append(len(rows))
        self.values.extend(rows)


def _run(session: Any, names: list[str], parser: JSONLParser, group: _Group, out: Any) -> None:
    outputs = runtime.run_session(session, {parser.name: parser.rows_array(group.values)}, names)
    out.write(
        output_lines(
            batch_uid="baseline",
            numbers=group.numbers,
            custom_ids=group.custom_ids,
            rows=group.rows,
            forms=None,
            outputs=outputs,
        )
    )


def runtime_path(version: Any) -> str:
    from models_registry.selectors import model_version_local_path

    return str(model_version_local_path(version=version))


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class MultipartBody:
    """A multipart/form-data body (`purpose=batch` and the file) streamed from disk in 1 MiB blocks.

    What `curl -F file=@rows.jsonl` sends: requests given `files=` would first build the whole body
    in memory (a copy of the file, before the first byte leaves); given an iterable with a length it
    sends each block as it is read, with a Content-Length.
    """

    def __init__(self, path: Path, boundary: str) -> None:
        self.path = path
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self.head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()

    def __len__(self) -> int:
        return len(self.head) + self.path.stat().st_size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as handle:
            while block := handle.read(1024 * 1024):
                yield block
        yield self.tail


def upload_file(client: requests.Session, url: str, path: Path) -> dict[str, Any]:
    body = MultipartBody(path, boundary=uuid.uuid4().hex)
    response = client.post(url + "/v1/files", headers={"Content-Type": body.content_type}, data=body, timeout=600)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def through_api(path: Path, key: str, workers: int, server: Any) -> dict[str, Any]:
    client = requests.Session()  # one keep-alive connection, as a client polling a job would use
    client.headers["Authorization"] = f"Bearer {key}"
    with _workers(workers) as procs, client:
        started = time.perf_counter()
        file = upload_file(client, server.url, path)
        uploaded = time.perf_counter()
        cpu_before = sum(cpu_seconds(proc.process.pid) for proc in procs)
        batch = client.post(
            server.url + "/v1/batches", json={"input_file_id": file["id"], "model": MODEL}, timeout=60
        ).json()
        while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.05)  # the job time is read to within 50 ms
            batch = client.get(server.url + f"/v1/batches/{batch['id']}", timeout=60).json()
        finished = time.perf_counter()
        cpu = sum(cpu_seconds(proc.process.pid) for proc in procs) - cpu_before
        size = 0
        with client.get(
            server.url + f"/v1/files/{batch['output_file_id']}/content", stream=True, timeout=600
        ) as response:
            for block in response.iter_content(1024 * 1024):
                size += len(block)
        downloaded = time.perf_counter()
        peak = max(_vm_hwm_mb(pid) for proc in procs for pid in children(proc.process.pid))
    return {
        "status": batch["status"],
        "counts": batch["request_counts"],
        "upload_s": uploaded - started,
        "job_s": finished - uploaded,
        "download_s": downloaded - finished,
        "end_to_end_s": downloaded - started,
        "output_bytes": size,
        "peak_rss_mb": peak,
        "worker_cpu_s": cpu,
    }


class _workers:
    def __init__(self, count: int) -> None:
        self.count = count
        self.contexts: list[Any] = []

    def __enter__(self) -> list[Any]:
        procs = []
        for index in range(self.count):
            context = live.celery_worker(WORK, name=f"bench{index}", concurrency=1)
            procs.append(context.__enter__())
            self.contexts.append(context)
        return procs

    def __exit__(self, *exc: Any) -> None:
        for context in self.contexts:
            context.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--rss-rows", type=int, default=100_000, help="a smaller run for the flat-memory check (0: skip)"
    )
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    from apiservice.celery import app

    app.control.purge()  # messages left on this broker by earlier runs
    org = org_services.organisation_get_or_create(name="Bench", slug="bench")
    _, key = org_services.api_key_create(organisation=org, name="bench", scopes=ALL_SCOPES)
    version = model_version_register(
        model=model_get_or_create(name=MODEL, organisation_id=org.pk),
        content=demo_models.diabetes_forest(),
        aliases=["production"],
    )
    results: dict[str, Any] = {
        "rows": args.rows,
        "chunk_rows": settings.BATCH_CHUNK_ROWS,
        "sub_batch_rows": settings.BATCH_SUB_BATCH_ROWS,
        "cpus": os.cpu_count(),
    }
    data = WORK / "rows.jsonl"
    make_file(data, args.rows)
    results["file_mb"] = round(data.stat().st_size / 1e6, 1)
    baseline, baseline_cpu = single_process(data, WORK / "baseline.jsonl", version, settings.BATCH_SUB_BATCH_ROWS)
    results["single_process"] = {
        "seconds": round(baseline, 2),
        "rows_per_s": round(args.rows / baseline),
        "cpu_s": round(baseline_cpu, 2),
        "rows_per_cpu_s": round(args.rows / baseline_cpu),
    }
    print(json.dumps(results["single_process"]), flush=True)
    with live.gunicorn(WORK, workers=2) as server:
        for count in args.workers:
            run = through_api(data, key, count, server)
            run["rows_per_s_job"] = round(args.rows / run["job_s"])
            run["rows_per_s_end_to_end"] = round(args.rows / run["end_to_end_s"])
            run["rows_per_worker_cpu_s"] = round(args.rows / run["worker_cpu_s"])
            results[f"workers_{count}"] = {k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()}
            print(json.dumps({f"workers_{count}": results[f"workers_{count}"]}), flush=True)
        if args.rss_rows:
            small = WORK / "rows-small.jsonl"
            make_file(small, args.rss_rows)
            run = through_api(small, key, 1, server)
            results["rss_check"] = {"rows": args.rss_rows, "peak_rss_mb": round(run["peak_rss_mb"], 1)}
    one = results.get("workers_1")
    if one:
        results["bar_one_worker_vs_limit_job"] = round(
            one["rows_per_s_job"] / results["single_process"]["rows_per_s"], 2
        )
        results["bar_one_worker_vs_limit_end_to_end"] = round(
            one["rows_per_s_end_to_end"] / results["single_process"]["rows_per_s"], 2
        )
    if one:
        results["cpu_efficiency_one_worker_vs_limit"] = round(
            one["rows_per_worker_cpu_s"] / results["single_process"]["rows_per_cpu_s"], 2
        )
    if one and results.get("workers_2"):
        results["bar_two_vs_one_workers_job"] = round(results["workers_2"]["rows_per_s_job"] / one["rows_per_s_job"], 2)
    if one and results.get("rss_check"):
        results["bar_rss_ratio_big_vs_small"] = round(one["peak_rss_mb"] / results["rss_check"]["peak_rss_mb"], 3)
    print(json.dumps(results, indent=2))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"batch-{args.rows}.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
