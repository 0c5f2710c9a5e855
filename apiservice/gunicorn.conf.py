"""gunicorn settings for production (`gunicorn -c apiservice/gunicorn.conf.py apiservice.wsgi`).

Every value can be overridden by the environment (GUNICORN_*) or on the command line.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count()))
# gthread: each request waits for its ledger row's commit (a WAL flush) before answering; threads let
# a worker serve the next request meanwhile, and keep client connections alive. bench/online.py
# measured ~3.6x the req/s of sync workers on one core (docs/benchmarks.md). ONNX Runtime sessions
# are thread-safe and release the GIL while they run.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", 8))  # concurrent calls share Redis and ledger round trips
timeout = int(os.environ.get("GUNICORN_TIMEOUT", 60))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 0))
max_requests_jitter = 100
preload_app = False  # ORT sessions are built lazily per worker, never forked
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
# "auto" parses HTTP with gunicorn_h1c (gunicorn's C parser, in requirements.txt) when it is installed,
# else with gunicorn's Python parser; "fast" refuses to start without it.
http_parser = os.environ.get("GUNICORN_HTTP_PARSER", "auto")
# gunicorn's control socket (for `gunicornc`) defaults to one path per user, which every gunicorn of that
# user on the host would share; it is off unless this instance is given a path of its own.
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker: object) -> None:
    """Requests gunicorn refuses itself (URL or headers too large, not HTTP) get our JSON envelope."""
    from apiservice.gunicorn_errors import install

    install()


def child_exit(server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
