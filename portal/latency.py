"""Log-scale latency histograms: mergeable, so percentiles can come from daily rollups.

Bucket `i` holds latencies in [exp(i/K), exp((i+1)/K)) milliseconds with K = 1/ln(1.1): each bucket is
10% wider than the last, so a percentile read back as the bucket's geometric middle is within about 5%
of the exact value, whatever the scale (0.01 ms to minutes).
"""

import math
from collections.abc import Iterable, Mapping

from django.db.models import FloatField, Func, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Floor, Greatest, Ln

K = 1.0 / math.log(1.1)
MIN_MS = 0.01


def bucket_of(latency_ms: float) -> int:
    return math.floor(math.log(max(latency_ms, MIN_MS)) * K)


def bucket_expression(field: str = "latency_ms") -> Func:
    """The same bucket as `bucket_of`, computed by the database (PostgreSQL or SQLite)."""
    clamped = Greatest(field, Value(MIN_MS), output_field=FloatField())
    scaled: Combinable = Ln(clamped) * Value(K)
    return Floor(scaled, output_field=FloatField())


def merge(histograms: Iterable[Mapping[str | int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for hist in histograms:
        for bucket, count in hist.items():
            key = int(bucket)
            merged[key] = merged.get(key, 0) + count
    return merged


def percentiles(hist: Mapping[int, int], quantiles: Iterable[float]) -> list[float | None]:
    """Each quantile read from the histogram, as its bucket's geometric middle (ms, 3 significant)."""
    total = sum(hist.values())
    wanted = list(quantiles)
    if total == 0:
        return [None for _ in wanted]
    ordered = sorted(hist.items())
    results: list[float | None] = []
    for q in wanted:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                results.append(float(f"{math.exp((bucket + 0.5) / K):.3g}"))
                break
    return results
