"""Prometheus metrics. Under gunicorn set PROMETHEUS_MULTIPROC_DIR so all workers are aggregated."""

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

API_CALLS = Counter("modelmeter_api_calls_total", "Authenticated API calls", ["face", "status"])
API_LATENCY = Histogram(
    "modelmeter_api_latency_seconds",
    "Latency of authenticated API calls inside the server",
    ["face"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
