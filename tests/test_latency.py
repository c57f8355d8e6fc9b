"""Latency histograms: bucket counts that add up, and the percentile estimate over them —
in units, and end to end (a simulator with a known latency, through a proxy, to the usage
query the console charts)."""

from __future__ import annotations

import openai
import pytest

from controlplane.usage import Counters, UsageAggregator
from megarouter import latency
from megarouter.v1 import admin_pb2, telemetry_pb2
from tests.conftest import API_KEY, build_system
from tests.harness import eventually


def _histogram(*latencies_ms: float) -> list[int]:
    counts = [0] * latency.BUCKETS
    for value in latencies_ms:
        counts[latency.bucket_of(value)] += 1
    return counts


def test_buckets_include_their_upper_bound() -> None:
    assert latency.bucket_of(0) == 0 and latency.bucket_of(5) == 0 and latency.bucket_of(5.01) == 1
    assert latency.bucket_of(10 ** 9) == latency.BUCKETS - 1


def test_percentiles_fall_in_the_right_bucket_and_interpolate_within_it() -> None:
    counts = _histogram(*[120] * 98, 3000, 3000)   # 98 in (100, 250], 2 in (2500, 5000]
    assert 100 < latency.percentile(counts, 0.5) <= 250
    assert latency.percentile(counts, 0.5) == pytest.approx(100 + 150 * 50 / 98)
    assert 2500 < latency.percentile(counts, 0.99) <= 5000
    assert latency.percentile([0] * latency.BUCKETS, 0.5) == 0.0


def test_histograms_add_up_across_records_and_old_documents_read_as_empty() -> None:
    a, b = Counters(requests=2, latency_ms_buckets=_histogram(20, 20)), Counters(
        requests=2, latency_ms_buckets=_histogram(800, 800))
    a.add(b)
    assert a.latency_ms_buckets == _histogram(20, 20, 800, 800)
    assert Counters.from_dict({"requests": 3}).latency_ms_buckets == [0] * latency.BUCKETS  # before latencies
    assert Counters.from_dict({"requests": 1, "latency_ms_buckets": [1, 2]}).latency_ms_buckets == \
        [0] * latency.BUCKETS  # another layout is not misread


def test_a_record_with_another_bucket_layout_is_counted_without_its_latencies(tmp_path) -> None:
    aggregator = UsageAggregator(store=None)  # add() does not touch the store
    record = telemetry_pb2.UsageRecord(key="k", day="2026-12-08", requests=1, latency_ms_buckets=[1, 2, 3])
    assert aggregator.add([record]) == 1


async def test_usage_queries_report_the_latency_clients_saw(tmp_path) -> None:
    system = await build_system(tmp_path, sim_flags=("--latency-ms", "120"))
    try:
        client = openai.AsyncOpenAI(base_url=system.base_url(), api_key=API_KEY, max_retries=0)
        for _ in range(4):
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])

        async def persisted() -> bool:
            rows = (await system.admin.QueryUsage(admin_pb2.QueryUsageRequest())).rows
            return bool(rows) and rows[0].requests == 4
        await eventually(persisted, timeout=20, what="the requests' usage to be persisted")
        row = (await system.admin.QueryUsage(admin_pb2.QueryUsageRequest(group_by=["day", "model"]))).rows[0]
        # 120 ms upstream plus the proxy's own time: the (100, 250] bucket.
        assert 100 < row.latency_p50_ms <= 250 and row.latency_p50_ms <= row.latency_p99_ms <= 250
    finally:
        await system.close()
