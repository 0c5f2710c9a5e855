#!/usr/bin/env python
"""Profile the online hot path in-process: the production WSGI application (`apiservice.wsgi`: the fast
route, ORT, ledger insert on PostgreSQL) called directly, no network, so the profile shows only our code.

    .venv/bin/python bench/profile_hot_path.py --only "forest-1 :predict" -n 3000 [--cprofile] [--idempotency-keys]

Without --cprofile it prints the µs per request (the number each optimisation commit quotes): this
process's CPU and, read from /proc, the local PostgreSQL's and Redis's CPU per request.
"""

import argparse
import cProfile
import io
import itertools
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import online
from procstat import service_cpu_seconds


def environ_for(scenario: online.Scenario) -> dict[str, object]:
    environ: dict[str, object] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": scenario.path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "CONTENT_LENGTH": str(len(scenario.body)),
        "HTTP_HOST": "127.0.0.1",
    }
    for key, value in scenario.headers.items():
        name = key.upper().replace("-", "_")
        environ[name if name == "CONTENT_TYPE" else f"HTTP_{name}"] = value
    return environ


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="forest-1 :predict")
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--dump", default="", help="also write the cProfile stats to this file")
    parser.add_argument("--cpu-clock", action="store_true", help="--cprofile on this thread's CPU time, not wall time")
    parser.add_argument("--idempotency-keys", action="store_true", help="a fresh Idempotency-Key on every request")
    args = parser.parse_args()
    ns = argparse.Namespace(
        pg="postgres://postgres@127.0.0.1:5432", db="mm_bench_profile", redis="redis://127.0.0.1:6379/15"
    )
    online.configure_env(ns)
    online.recreate_database(ns)
    state = online.seed()
    scenario = next(s for s in online.build_scenarios(state, ("forest", "mlp")) if s.name == args.only)
    from apiservice.wsgi import application as _app

    app = _app
    base = environ_for(scenario)
    counter = itertools.count()
    prefix = f"profile-{time.time()}-"

    def one() -> None:
        environ = dict(base)
        if args.idempotency_keys:
            environ["HTTP_IDEMPOTENCY_KEY"] = prefix + str(next(counter))
        environ["wsgi.input"] = io.BytesIO(scenario.body)
        statuses: list[str] = []
        body = b"".join(app(environ, lambda status, headers, exc=None: statuses.append(status)))
        if not statuses[0].startswith("200"):
            raise SystemExit(f"{statuses[0]}: {body[:300]!r}")

    for _ in range(300):
        one()
    if args.cprofile:
        profiler = cProfile.Profile(time.thread_time) if args.cpu_clock else cProfile.Profile()
        profiler.enable()
        for _ in range(args.n):
            one()
        profiler.disable()
        if args.dump:
            profiler.dump_stats(args.dump)
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        return
    import psycopg

    round_trips = [0]
    wait = psycopg.Connection.wait

    def counted_wait(self: psycopg.Connection, *a: object, **k: object) -> object:  # type: ignore[type-arg]
        round_trips[0] += 1
        return wait(self, *a, **k)  # type: ignore[arg-type]

    psycopg.Connection.wait = counted_wait  # type: ignore[assignment,method-assign]
    walls, cpus, services = [], [], []
    for _ in range(args.rounds):
        before = service_cpu_seconds()
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.n):
            one()
        walls.append((time.perf_counter() - started) / args.n * 1e6)
        cpus.append((time.process_time() - cpu) / args.n * 1e6)
        after = service_cpu_seconds()
        services.append({name: (after[name] - before[name]) / args.n * 1e6 for name in after})
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        one()
    profiler.disable()
    calls = pstats.Stats(profiler).total_calls / 200  # type: ignore[attr-defined]
    print(
        f"{scenario.name}: min {min(walls):.0f} µs wall, min {min(cpus):.0f} µs CPU per request (in-process, "
        f"best of {args.rounds} x {args.n}); {round_trips[0] / (args.rounds * args.n + 200):.2f} DB round trips "
        f"and {calls:.0f} Python function calls per request; "
        + ", ".join(f"{name} {min(s[name] for s in services):.0f} µs CPU" for name in services[0])
    )


if __name__ == "__main__":
    main()
