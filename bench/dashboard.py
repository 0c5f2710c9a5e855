"""Dashboard benchmark: load a million ledger rows into PostgreSQL, then time the staff and customer pages.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mm_portal_bench .venv/bin/python bench/dashboard.py

The database is created (and migrated) if missing and emptied of earlier bench data. Rows go in with
COPY; then the daily rollup is built (timed) and each page is fetched N times through Django's test
client (URL routing, middleware, queries and template rendering, no network), median and max reported.
Results are printed and written to bench/results/dashboard.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mm_portal_bench")


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--organisations", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="Keep the rows of an earlier run (same --rows).")
    args = parser.parse_args()
    ensure_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = {"rows": args.rows, "days": args.days, "organisations": args.organisations}
    cast = seed(args)
    results["load_s"] = 0.0 if cast["reused"] else load(args, cast)
    results["pages_live_ledger"] = measure(args, cast, label="no rollup (all days live from the ledger)")
    from portal.services import usage_rollup_refresh

    started = time.perf_counter()
    usage_rollup_refresh()
    results["rollup_s"] = round(time.perf_counter() - started, 2)
    print(f"rollup of {args.days} days: {results['rollup_s']} s")
    results["pages_with_rollup"] = measure(args, cast, label="with the daily rollup (today live)")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard.json").write_text(json.dumps(results, indent=2))


def seed(args: argparse.Namespace) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from apiservice.models import Membership, Organisation
    from billing.models import UsageRecord
    from models_registry.models import MLModel, ModelVersion
    from portal.models import UsageRollup, UsageRollupCursor

    UsageRollup.objects.all().delete()
    UsageRollupCursor.objects.all().delete()
    reused = args.reuse and UsageRecord.objects.count() == args.rows
    if not reused:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {UsageRecord._meta.db_table}")
    orgs = [
        Organisation.objects.get_or_create(slug=f"bench-{i}", defaults={"name": f"Bench customer {i:03d}"})[0]
        for i in range(args.organisations)
    ]
    versions = []
    for m in range(5):
        model, _ = MLModel.objects.get_or_create(name=f"bench-model-{m}")
        for n in range(1, 4):
            version, _ = ModelVersion.objects.get_or_create(
                model=model, number=n, defaults={"file": f"bench/{m}/{n}.onnx", "sha256": "0" * 64, "status": "ready"}
            )
            versions.append(version)
    User = get_user_model()
    staff = User.objects.filter(username="bench-staff").first() or User.objects.create_user(
        "bench-staff", "bench@example.com", "bench-pw", is_staff=True
    )
    customer = User.objects.filter(username="bench-customer").first() or User.objects.create_user(
        "bench-customer", "customer@example.com", "bench-pw"
    )
    Membership.objects.get_or_create(user=customer, organisation=orgs[0], defaults={"role": "owner"})
    return {
        "reused": reused,
        "orgs": [o.pk for o in orgs],
        "versions": [v.pk for v in versions],
        "staff": staff,
        "customer": customer,
        "model_id": versions[0].model_id,
    }


def load(args: argparse.Namespace, cast: dict) -> float:
    """COPY rows: customers' volumes follow a Zipf-like curve; each uses two model versions."""
    from django.db import connection
    from django.utils import timezone

    from billing.models import UsageRecord

    rng = np.random.default_rng(42)
    n = args.rows
    orgs = np.array(cast["orgs"])
    weights = 1.0 / np.arange(1, len(orgs) + 1)
    org_idx = rng.choice(len(orgs), size=n, p=weights / weights.sum())
    versions = np.array(cast["versions"])
    version_idx = (org_idx * 7 + rng.integers(0, 2, size=n)) % len(versions)
    now = timezone.now()
    offsets = rng.uniform(0, args.days * 86400, size=n)
    latency = rng.lognormal(mean=1.5, sigma=0.7, size=n)
    errors = rng.random(n) < 0.02
    units = np.where(errors, 0, rng.integers(1, 64, size=n))
    table = UsageRecord._meta.db_table
    columns = "request_id, organisation_id, face, meter, model_version_id, units, status_code, latency_ms, created_at"
    started = time.perf_counter()
    raw = connection.connection if connection.connection else (connection.ensure_connection() or connection.connection)
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for i in range(n):
            copy.write_row(
                (
                    "bench_" + uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i).hex,
                    int(orgs[org_idx[i]]),
                    "v1-predict",
                    "" if errors[i] else "online_predictions",
                    int(versions[version_idx[i]]),
                    int(units[i]),
                    500 if errors[i] else 200,
                    float(latency[i]),
                    now - timedelta(seconds=float(offsets[i])),
                )
            )
    raw.commit()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    elapsed = round(time.perf_counter() - started, 2)
    print(f"loaded {n} ledger rows with COPY in {elapsed} s")
    return elapsed


def measure(args: argparse.Namespace, cast: dict, *, label: str) -> dict:
    from django.test import Client

    staff, customer = Client(), Client()
    staff.force_login(cast["staff"])
    customer.force_login(cast["customer"])
    pages = {
        "staff usage, 30 days": (staff, "/staff/"),
        "staff usage, 30 days, one organisation": (staff, f"/staff/?organisation={cast['orgs'][0]}"),
        "staff usage, 30 days, one model": (staff, f"/staff/?model={cast['model_id']}"),
        "staff CSV export, 30 days": (staff, "/staff/usage/export.csv"),
        "customer usage (largest customer), 30 days": (customer, "/portal/usage/"),
    }
    print(f"\n{label}")
    report = {}
    for name, (client, url) in pages.items():
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(url)
            if response.streaming:
                b"".join(response.streaming_content)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
        report[name] = {
            "median_ms": round(statistics.median(timings) * 1000, 1),
            "max_ms": round(max(timings) * 1000, 1),
        }
        print(f"  {name:45s} median {report[name]['median_ms']:8.1f} ms   max {report[name]['max_ms']:8.1f} ms")
    return report


if __name__ == "__main__":
    main()
