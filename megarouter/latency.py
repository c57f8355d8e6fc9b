"""Latency histograms that add up: fixed bucket bounds shared by the proxies, which count
each request's latency into a bucket, and the control plane, which adds the counts across
proxies, keys and days and estimates percentiles from the sum.

Percentiles of sums cannot be computed from percentiles, so usage records carry bucket
counts; the estimate interpolates linearly inside the bucket the percentile falls in, so
it is exact to within that bucket's width (the bounds grow roughly 2–2.5× per bucket).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Upper bounds (inclusive, milliseconds) of every bucket but the last, which holds the rest.
BOUNDS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
BUCKETS = len(BOUNDS_MS) + 1


def bucket_of(latency_ms: float) -> int:
    return bisect_left(BOUNDS_MS, latency_ms)


def add_into(into: list[int], counts: Sequence[int]) -> None:
    """Add `counts` to `into` (both BUCKETS long)."""
    for index, count in enumerate(counts):
        into[index] += count


def valid(counts: Sequence[int]) -> bool:
    """A histogram of this release's shape (another length is ignored, not misread)."""
    return len(counts) == BUCKETS and all(count >= 0 for count in counts)


def percentile(counts: Sequence[int], q: float) -> float:
    """The q-quantile (0 < q <= 1) in milliseconds, 0.0 for an empty histogram."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            low = BOUNDS_MS[index - 1] if index > 0 else 0.0
            high = BOUNDS_MS[index] if index < len(BOUNDS_MS) else BOUNDS_MS[-1] * 2
            return low + (high - low) * (rank - seen) / count
        seen += count
    return float(BOUNDS_MS[-1])
