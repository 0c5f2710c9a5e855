#!/usr/bin/env python
"""Online inference benchmark: the production stack on one core, driven by wrk on the other.

    .venv/bin/python bench/online.py [--duration 8] [--latency-duration 5] [--only forest-1]

What it does, in one run:
1. recreates a bench database on PostgreSQL (`--db`, default `mm_bench`), migrates it, registers the
   benchmark models (100-tree random forest on diabetes, dense MLP 256->1024->1024->10) through the
   registry services, and creates an organisation and an API key through the services;
2. measures raw ONNX Runtime in-process (same model file, same input, one intra-op thread, pinned to
   the server core): per-call p50/p99 and calls/s;
3. starts gunicorn with the production config (`apiservice/gunicorn.conf.py`), ONE worker (gthread) pinned
   with `taskset -c <server-cpu>`, ORT_INTRA_OP_THREADS=1, PostgreSQL and Redis, and drives each
   scenario with wrk pinned to `<client-cpu>`: req/s at 8 connections, p50/p99 at 1 connection;
4. does the same against a bare gunicorn JSON app (`bench/bare_app.py`, same gunicorn settings);
5. prints a markdown table and writes it to `bench/results/online-<timestamp>.md`.

Only loopback traffic. Every scenario is checked first (one request must answer 200 with the expected
output), and wrk's non-2xx count is reported, so a broken path can never pass for a fast one.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from procstat import cpu_seconds  # noqa: E402

BARE = "bare gunicorn JSON app"


@dataclass
class Scenario:
    name: str  # e.g. "forest-1 :predict"
    model: str  # "forest" | "mlp"
    rows: int
    face: str  # ":predict" | "v2 JSON" | "v2 binary"
    path: str
    body: bytes
    headers: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)


# --- set-up ---------------------------------------------------------------------------------------


def configure_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the server (and of this process's Django set-up)."""
    media = ROOT / "var" / "bench" / "media"
    media.mkdir(parents=True, exist_ok=True)
    env = {
        "DJANGO_SETTINGS_MODULE": "apiservice.settings",  # production settings, over plain HTTP:
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "BILLING_DEFAULT_PLAN": "enterprise",  # no monthly cap to run into (the key's rate limit is raised)
        "DATABASE_URL": f"{args.pg}/{args.db}",
        "REDIS_URL": args.redis,
        "MEDIA_ROOT": str(media),
        "ORT_INTRA_OP_THREADS": "1",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    os.environ.pop("PYTEST_XDIST_WORKER", None)
    return env


def recreate_database(args: argparse.Namespace) -> None:
    import psycopg

    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')


def seed() -> dict[str, Any]:
    """Migrate, register both models, create an org and a key. Returns what the scenarios need."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from apiservice.services import api_key_create, organisation_get_or_create
    from models_registry import demo_models
    from models_registry.selectors import model_version_local_path
    from models_registry.services import model_get_or_create, model_version_register

    call_command("migrate", verbosity=0, interactive=False)
    organisation = organisation_get_or_create(name="Bench", slug="bench")
    api_key, key = api_key_create(organisation=organisation, name="bench", scopes=["predict"])
    # Metering stays fully on (rate limit, quota, ledger); the bench customer's limits are just high
    # enough that wrk measures the server rather than the plan.
    from billing.models import BillingAccount, KeyLimit, Plan

    BillingAccount.objects.update_or_create(
        organisation=organisation, defaults={"plan": Plan.objects.get(code="enterprise")}
    )
    KeyLimit.objects.update_or_create(api_key=api_key, defaults={"rate_limit": "100000000/hour"})
    models = {}
    for short, name, build in (
        ("forest", "bench-forest", demo_models.diabetes_forest),
        ("mlp", "bench-mlp", demo_models.dense_mlp),
    ):
        model = model_get_or_create(name=name)
        version = model_version_register(model=model, content=build(), aliases=["production"])
        if version.status != "ready":
            raise SystemExit(f"{name} failed validation: {version.failure_reason}")
        models[short] = {
            "name": name,
            "path": str(model_version_local_path(version=version)),
            "input": version.signature["inputs"][0],
            "output": version.signature["outputs"][0]["name"],
        }
    connections.close_all()
    return {"key": key, "organisation_id": organisation.pk, "models": models}


def ledger_count() -> int:
    from billing.models import UsageRecord

    return UsageRecord.objects.count()


def make_input(model: str, rows: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(42)
    width = 10 if model == "forest" else 256
    scale = 0.05 if model == "forest" else 1.0  # the diabetes features are centred and scaled
    # Rounded to 6 decimals, as a client would print them.
    return np.round(rng.standard_normal((rows, width)) * scale, 6).astype(np.float32)


def build_scenarios(state: dict[str, Any], models: tuple[str, ...]) -> list[Scenario]:
    import numpy as np

    auth = {"Authorization": f"Bearer {state['key']}", "Content-Type": "application/json"}
    scenarios = []
    for model, rows in (("forest", 1), ("forest", 64), ("mlp", 64)):
        if model not in models:
            continue
        info = state["models"][model]
        array = make_input(model, rows)
        rows_list = array.astype(np.float64).tolist()
        name = info["name"]
        input_name, datatype = info["input"]["name"], info["input"]["datatype"]
        predict = json.dumps({"instances": rows_list}).encode()
        infer = json.dumps(
            {
                "inputs": [
                    {
                        "name": input_name,
                        "datatype": datatype,
                        "shape": [rows, array.shape[1]],
                        "data": [v for row in rows_list for v in row],
                    }
                ]
            }
        ).encode()
        label = f"{model}-{rows}"
        scenarios.append(
            Scenario(f"{label} :predict", model, rows, ":predict", f"/v1/models/{name}:predict", predict, auth)
        )
        scenarios.append(Scenario(f"{label} v2 JSON", model, rows, "v2 JSON", f"/v2/models/{name}/infer", infer, auth))
        if model == "mlp":
            raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
            head = json.dumps(
                {
                    "inputs": [
                        {
                            "name": input_name,
                            "datatype": datatype,
                            "shape": [rows, array.shape[1]],
                            "parameters": {"binary_data_size": len(raw)},
                        }
                    ],
                    "outputs": [{"name": info["output"], "parameters": {"binary_data": True}}],
                }
            ).encode()
            headers = {
                "Authorization": auth["Authorization"],
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(head)),
            }
            scenarios.append(
                Scenario(
                    f"{label} v2 binary", model, rows, "v2 binary", f"/v2/models/{name}/infer", head + raw, headers
                )
            )
    return scenarios


# --- raw ONNX Runtime baseline --------------------------------------------------------------------


def raw_ort_main(path: str, model: str, rows: int, seconds: float) -> None:
    """Child process (pinned by taskset): time `session.run` on the same input the server gets."""
    import numpy as np

    from inference.runtime import new_session

    session = new_session(path, intra_op_threads=1)
    feeds = {session.get_inputs()[0].name: make_input(model, rows)}
    names = [o.name for o in session.get_outputs()]
    for _ in range(200):
        session.run(names, feeds)
    timings = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            started = clock()
            session.run(names, feeds)
            timings.append(clock() - started)
    timings_us = np.array(timings) / 1000.0
    total_s = float(timings_us.sum()) / 1e6
    print(
        json.dumps(
            {
                "p50_ms": float(np.percentile(timings_us, 50)) / 1000.0,
                "p99_ms": float(np.percentile(timings_us, 99)) / 1000.0,
                "rps": len(timings) / total_s,
                "calls": len(timings),
            }
        )
    )


def raw_ort(args: argparse.Namespace, info: dict[str, Any], model: str, rows: int) -> dict[str, Any]:
    runs = [_raw_ort_once(args, info, model, rows) for _ in range(args.repeat)]
    best = max(runs, key=lambda r: r["rps"])
    return {**best, "p50_ms": min(r["p50_ms"] for r in runs)}


def _raw_ort_once(args: argparse.Namespace, info: dict[str, Any], model: str, rows: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            args.server_cpu,
            sys.executable,
            __file__,
            "--raw-ort",
            info["path"],
            "--raw-model",
            model,
            "--raw-rows",
            str(rows),
            "--raw-seconds",
            str(args.raw_seconds),
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- servers and wrk ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(
    args: argparse.Namespace, app: str, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        "taskset",
        "-c",
        args.server_cpu,
        str(BIN / "gunicorn"),
        "-c",
        str(ROOT / "apiservice" / "gunicorn.conf.py"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        *args.gunicorn_args.split(),
        app,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url + "/v2/health/live", timeout=2):
                break
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not answer; see {log}") from None
            time.sleep(0.2)
    return process, url


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check(url: str, scenario: Scenario) -> None:
    """One request first: it must be a 200 carrying the model's output."""
    request = urllib.request.Request(url + scenario.path, data=scenario.body, headers=scenario.headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{scenario.name}: HTTP {response.status}: {body[:300]!r}")
    if scenario.face == "v2 binary":
        head = body[: int(response.headers["Inference-Header-Content-Length"])]
        tensors = json.loads(head)["outputs"]
        expected = scenario.rows * 10 * 4
        if tensors[0]["parameters"]["binary_data_size"] != expected or len(body) - len(head) != expected:
            raise SystemExit(f"{scenario.name}: unexpected binary output {head!r}")
    else:
        payload = json.loads(body)
        if "predictions" not in payload and "outputs" not in payload:
            raise SystemExit(f"{scenario.name}: unexpected body {body[:300]!r}")


LUA = """
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
"""


def lua_script(workdir: Path, scenario: Scenario) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", scenario.name.lower()).strip("-")
    body = workdir / f"{slug}.body"
    body.write_bytes(scenario.body)
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in scenario.headers.items())
    script = workdir / f"{slug}.lua"
    script.write_text(LUA.format(body=body, headers=headers))
    return script


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * UNITS[match.group(2)]


def wrk(
    args: argparse.Namespace, url: str, script: Path, *, connections: int, seconds: float, latency: bool
) -> dict[str, Any]:
    command = [
        "taskset",
        "-c",
        args.client_cpu,
        args.wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    if latency:
        command.append("--latency")
    out = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
        "socket_errors": sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)),
    }
    if latency:
        for pct in ("50", "99"):
            result[f"p{pct}_ms"] = _ms(re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return result


def drive(
    args: argparse.Namespace, base: str, scenario: Scenario, workdir: Path, server: subprocess.Popen[bytes]
) -> dict[str, Any]:
    url, script = base + scenario.path, lua_script(workdir, scenario)
    warm = wrk(args, url, script, connections=8, seconds=args.warmup, latency=False)
    # On a shared host other processes steal the pinned cores now and then: with --repeat N each run is
    # done N times and the least disturbed one is kept (highest req/s; lowest p50, with its own p99).
    # The server's own CPU time per request during the 8-connection runs is what other load disturbs
    # least: 1 / (CPU per request) is what the pinned core would serve if nothing else ran on it.
    cpu_before = cpu_seconds(server.pid)
    runs = [wrk(args, url, script, connections=8, seconds=args.duration, latency=False) for _ in range(args.repeat)]
    cpu_us = (cpu_seconds(server.pid) - cpu_before) / max(1, sum(r["requests"] for r in runs)) * 1e6
    lats = [
        wrk(args, url, script, connections=1, seconds=args.latency_duration, latency=True) for _ in range(args.repeat)
    ]
    throughput, latency = max(runs, key=lambda r: r["rps"]), min(lats, key=lambda r: r["p50_ms"])
    everything = [warm, *runs, *lats]
    return {
        "rps": throughput["rps"],
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "cpu_us": cpu_us,
        "requests": sum(r["requests"] for r in everything),
        "non2xx": sum(r["non2xx"] for r in everything),
        "socket_errors": sum(r["socket_errors"] for r in everything),
    }


# --- report ---------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def report(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    bare: dict[str, Any],
    raws: dict[str, dict[str, Any]],
    ledger: tuple[int, int],
) -> str:
    lines = [
        f"# Online inference benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/online.py', *sys.argv[1:]])}`  ",
        f"Server: gunicorn, 1 worker ({args.gunicorn_args or 'config from apiservice/gunicorn.conf.py'}"
        f"{'; env ' + ' '.join(args.server_env) if args.server_env else ''}), `taskset -c {args.server_cpu}`, "
        "ORT_INTRA_OP_THREADS=1, PostgreSQL + Redis. "
        f"Load: wrk 1 thread, `taskset -c {args.client_cpu}`, {args.duration:g} s at 8 connections (req/s), "
        f"{args.latency_duration:g} s at 1 connection (p50/p99), best of {args.repeat}. Host: {os.cpu_count()} CPUs, "
        f"load average {args.load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.",
        "",
        "| Scenario | req/s (8 conn) | p50 ms (1 conn) | p99 ms | vs bare gunicorn req/s | p50 - raw ORT p50 (ms) "
        "| raw ORT p50 ms | raw ORT calls/s | req/s / raw ORT calls/s | server CPU µs / req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {BARE} | {fmt(bare['rps'], 0)} | {fmt(bare['p50_ms'], 3)} | {fmt(bare['p99_ms'], 3)} | 1.00 "
        f"| | | | | {fmt(bare['cpu_us'], 0)} | {bare['non2xx']} |",
    ]
    for s in scenarios:
        r, raw = s.results, raws[f"{s.model}-{s.rows}"]
        lines.append(
            f"| {s.name} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 3)} | {fmt(r['p99_ms'], 3)} | "
            f"{r['rps'] / bare['rps']:.2f} | {r['p50_ms'] - raw['p50_ms']:+.3f} | {fmt(raw['p50_ms'], 3)} | "
            f"{fmt(raw['rps'], 0)} | {r['rps'] / raw['rps']:.2f} | {fmt(r['cpu_us'], 0)} | "
            f"{r['non2xx'] + r['socket_errors']} |"
        )
    lines += ["", "Bars (issue 2):"]
    for s in scenarios:
        raw = raws[f"{s.model}-{s.rows}"]
        if s.model == "forest" and s.rows == 1:
            over = s.results["p50_ms"] - raw["p50_ms"]
            ok = s.results["rps"] >= 2000 and over <= 0.5
            lines.append(
                f"- {s.name}: {fmt(s.results['rps'], 0)} req/s (bar ≥ 2,000), p50 {over:+.3f} ms over raw ORT "
                f"(bar ≤ 0.5): **{'PASS' if ok else 'FAIL'}**"
            )
        if s.face == "v2 binary":
            ratio = s.results["rps"] / raw["rps"]
            lines.append(
                f"- {s.name}: {ratio:.2f}x raw ORT throughput (bar ≥ 0.8): **{'PASS' if ratio >= 0.8 else 'FAIL'}**"
            )
    lines.append(
        f"- Ledger: {ledger[0]:,} rows written for {ledger[1]:,} responses counted by wrk and the checks "
        "(wrk stops counting at the deadline; the server still records the requests in flight)."
    )
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run (8 connections)")
    parser.add_argument("--latency-duration", type=float, default=5.0, help="seconds per latency run (1 connection)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per scenario")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the least disturbed is kept")
    parser.add_argument("--raw-seconds", type=float, default=3.0, help="seconds per raw ONNX Runtime baseline")
    parser.add_argument("--only", default="", help="comma-separated scenario substrings, e.g. 'forest-1 ,binary'")
    parser.add_argument("--models", default="forest,mlp")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--db", default="mm_bench", help="bench database; dropped and recreated on each run")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--gunicorn-args", default="", help="extra gunicorn flags, e.g. '--worker-class gthread --threads 4'"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the product server, e.g. GUNICORN_WORKER_CLASS=gthread",
    )
    parser.add_argument("--keep-server", action="store_true", help="leave gunicorn up at the end (for profiling)")
    parser.add_argument("--raw-ort", help=argparse.SUPPRESS)
    parser.add_argument("--raw-model", help=argparse.SUPPRESS)
    parser.add_argument("--raw-rows", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.raw_ort:
        raw_ort_main(args.raw_ort, args.raw_model, args.raw_rows, args.raw_seconds)
        return
    if not shutil.which(args.wrk):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    args.load_before = os.getloadavg()[0]
    env = configure_env(args)
    recreate_database(args)
    state = seed()
    scenarios = build_scenarios(state, tuple(args.models.split(",")))
    if args.only:
        wanted = [w for w in args.only.split(",") if w]
        scenarios = [s for s in scenarios if any(w in s.name for w in wanted)]

    raws = {}
    for key in sorted({f"{s.model}-{s.rows}" for s in scenarios}):
        model, rows = key.split("-")
        raws[key] = raw_ort(args, state["models"][model], model, int(rows))
        print(f"raw ORT {key}: {raws[key]}", file=sys.stderr)

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mm-bench-") as tmp:
        workdir = Path(tmp)
        process, url = start_gunicorn(args, "bench.bare_app:application", env, workdir / "bare.log")
        try:
            bare_scenario = scenarios[0] if scenarios else build_scenarios(state, ("forest",))[0]
            bare = drive(args, url, bare_scenario, workdir, process)
            print(f"{BARE}: {bare}", file=sys.stderr)
        finally:
            stop(process)

        before = ledger_count()
        counted = 0
        server_env = {**env, **dict(item.split("=", 1) for item in args.server_env)}
        process, url = start_gunicorn(args, "apiservice.wsgi", server_env, workdir / "server.log")
        try:
            for scenario in scenarios:
                check(url, scenario)
                scenario.results = drive(args, url, scenario, workdir, process)
                counted += 1 + scenario.results["requests"]
                print(f"{scenario.name}: {scenario.results}", file=sys.stderr)
            if args.keep_server:
                print(f"server left running at {url} (pid {process.pid}); key {state['key']}", file=sys.stderr)
                process.wait()
        finally:
            stop(process)
        time.sleep(0.5)
        written = ledger_count() - before

    text = report(args, scenarios, bare, raws, (written, counted))
    path = out_dir / f"online-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text(text)
    print(text)
    print(f"(written to {path.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
