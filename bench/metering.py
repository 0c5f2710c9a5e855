"""Metering overhead: the same gunicorn + PostgreSQL + Redis stack with METERING_ENABLED off and on.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/modelmeter_bench REDIS_URL=redis://127.0.0.1:6379/15 \
        .venv/bin/python bench/metering.py [--seconds 10] [--rounds 3] [--workers 2] [--connections 8]

Modes, run alternately (off, on, on+idem, off, ...) so drift on a shared machine hits them alike:
- off:       METERING_ENABLED=false (the ledger row is still written: it is the foundation's).
- on:        rate limit (Redis), quota + key budget reservation (Redis Lua), ledger.
- on+idem:   the same, and every request carries a fresh Idempotency-Key (claim + stored response).
The organisation is on a hard-capped plan with a large quota and the key has a budget, so every
check runs for real and none trips. Load: `wrk` with keep-alive on loopback (1-row iris :predict).
Prints req/s per mode (median of rounds) and the ratio on/off; writes bench/results/metering.json.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from procstat import cpu_seconds, service_cpu_seconds  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apiservice.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/modelmeter_bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local counter = 0
local idem = %(idem)s
local prefix = "%(prefix)s"
request = function()
  if idem then
    counter = counter + 1
    wrk.headers["Idempotency-Key"] = prefix .. "-" .. counter
  end
  return wrk.format(nil, "/v1/models/iris:predict")
end
"""


def ensure_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_fixtures() -> str:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    from apiservice import services as org_services
    from billing.models import BillingAccount, KeyLimit, Plan, PlanPrice
    from models_registry import demo_models
    from models_registry.models import MLModel
    from models_registry.services import model_get_or_create, model_version_register

    org = org_services.organisation_get_or_create(name="Bench metering", slug="bench-metering")
    api_key, key = org_services.api_key_create(organisation=org, name="bench")
    plan, _ = Plan.objects.update_or_create(
        code="bench-capped", defaults={"name": "Bench (capped)", "rate_limit": "100000000/hour", "hard_cap": True}
    )
    PlanPrice.objects.update_or_create(
        plan=plan, meter="online_predictions", defaults={"included_units": 10**12, "unit_amount_decimal": "0.05"}
    )
    BillingAccount.objects.update_or_create(organisation=org, defaults={"plan": plan})
    KeyLimit.objects.create(api_key=api_key, monthly_budget_units=10**12)
    if not MLModel.objects.filter(name="iris", organisation__isnull=True).exists():
        model = model_get_or_create(name="iris", organisation_id=None)
        model_version_register(model=model, content=demo_models.iris_classifier(), aliases=["production"])
    return key


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_mode(mode: str, key: str, args: argparse.Namespace, media_root: str) -> tuple[float, dict[str, float]]:
    """req/s of one wrk run, and CPU µs per request during it: the gunicorn server (all workers
    together), PostgreSQL (backends that live through the run) and Redis."""
    port = free_port()
    env = dict(os.environ, METERING_ENABLED="false" if mode == "off" else "true", MEDIA_ROOT=media_root)
    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "-c",
            str(ROOT / "apiservice/gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "apiservice.wsgi",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port)

        def wrk(seconds: int) -> str:
            # wrk's Lua random numbers are not seeded: a prefix from here keeps every run's keys fresh
            values = {"key": key, "idem": "true" if mode == "on+idem" else "false", "prefix": time.time_ns()}
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(WRK_SCRIPT % values)
            command = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "-s", script.name]
            run = subprocess.run([*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True)
            return run.stdout

        wrk(2)  # warm-up
        cpu_before, services_before = cpu_seconds(server.pid), service_cpu_seconds()
        out = wrk(args.seconds)
        cpu = {"gunicorn": cpu_seconds(server.pid) - cpu_before}
        cpu.update({name: used - services_before[name] for name, used in service_cpu_seconds().items()})
        if "Non-2xx" in out:
            raise RuntimeError(f"{mode}: non-2xx responses:\n{out}")
        requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        return rps, {name: used / max(1, requests) * 1e6 for name, used in cpu.items()}
    finally:
        server.terminate()
        server.wait(30)


def wait_ready(port: int) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def gateway_micro(key: str, n: int = 2000) -> dict[str, float]:
    """In-process cost of billing's hooks per request (no HTTP, no model), and of one ledger write."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from apiservice.auth import authenticate_key
    from apiservice.middleware import new_request_id, usage_of
    from billing import gateway
    from billing.services import usage_record

    principal = authenticate_key(f"Bearer {key}")
    factory = RequestFactory()
    body = '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'

    def one(idem: str | None) -> None:
        extra = {"HTTP_IDEMPOTENCY_KEY": idem} if idem else {}
        request = factory.post("/v1/models/iris:predict", data=body, content_type="application/json", **extra)
        request.principal = principal  # type: ignore[attr-defined]
        assert gateway.admit(request) is None
        usage = usage_of(request)
        usage.units, usage.meter = 1, "online_predictions"  # what the view reports for one row
        gateway.settle(request, HttpResponse(b'{"predictions": []}', content_type="application/json"))

    def timed(fn: object, *args: object) -> float:
        started = time.perf_counter()
        for i in range(n):
            fn(*(a if a != "idem" else f"micro-{started}-{i}" for a in args))  # type: ignore[operator]
        return (time.perf_counter() - started) / n * 1000

    one(None)
    results = {"gateway_ms": timed(one, None), "gateway_idem_ms": timed(one, "idem")}
    results["ledger_write_ms"] = timed(
        lambda: usage_record(
            request_id=new_request_id(),
            principal=principal,
            face="bench",
            status_code=200,
            latency_ms=1.0,
            units=1,
            meter="online_predictions",
        )
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--order", default="off,on,on+idem", help="Mode order within a round.")
    args = parser.parse_args()
    ensure_database()
    key = setup_fixtures()
    from django.conf import settings

    micro = gateway_micro(key)
    print("in-process per request: " + ", ".join(f"{k} {v:.3f}" for k, v in micro.items()), flush=True)
    results: dict[str, list[float]] = {mode: [] for mode in args.order.split(",")}
    service_cpu: dict[str, dict[str, list[float]]] = {mode: {} for mode in results}
    for round_ in range(args.rounds):
        for mode in results:
            rps, used = run_mode(mode, key, args, str(settings.MEDIA_ROOT))
            results[mode].append(rps)
            for name, value in used.items():
                service_cpu[mode].setdefault(name, []).append(value)
            shares = " ".join(f"{name} {value:4.0f}" for name, value in used.items())
            print(f"round {round_ + 1} {mode:8s} {rps:8.1f} req/s; CPU µs/request: {shares}", flush=True)
    medians = {mode: statistics.median(values) for mode, values in results.items()}
    cpu_by_process = {
        mode: {name: statistics.median(values) for name, values in by_name.items()}
        for mode, by_name in service_cpu.items()
    }
    cpu_medians = {mode: by_name["gunicorn"] for mode, by_name in cpu_by_process.items()}
    summary = {
        "req_per_s": medians,
        "runs": results,
        "ratio_on_vs_off": medians["on"] / medians["off"],
        # Paired: each round's on / off (adjacent runs share the machine's mood), then the median.
        "paired_ratio_on_vs_off": statistics.median(a / b for a, b in zip(results["on"], results["off"], strict=True)),
        "paired_ratio_on_idem_vs_off": statistics.median(
            a / b for a, b in zip(results["on+idem"], results["off"], strict=True)
        ),
        "ratio_on_idem_vs_off": medians["on+idem"] / medians["off"],
        # Worker time added per request (the workers are the bottleneck: each serves req/s / workers).
        "overhead_ms_on": (1 / medians["on"] - 1 / medians["off"]) * 1000 * args.workers,
        "overhead_ms_on_idem": (1 / medians["on+idem"] - 1 / medians["off"]) * 1000 * args.workers,
        # Server CPU per request (gunicorn master + workers): what other load on a shared host disturbs
        # least. off/on is the req/s ratio the same workers would reach with the cores to themselves.
        "server_cpu_us_per_request": cpu_medians,
        "cpu_ratio_off_vs_on": cpu_medians["off"] / cpu_medians["on"],
        # The same for PostgreSQL and Redis (they share the machine's cores with the server).
        "cpu_us_per_request_by_process": cpu_by_process,
        "in_process": micro,
        "args": vars(args),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metering.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
