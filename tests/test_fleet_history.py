"""The fleet health history behind the console's sparklines: one point per step (the last
view of the step), a bounded number of them, endpoints without traffic left out."""

from __future__ import annotations

from controlplane.fleet import HealthHistory
from megarouter.v1 import discovery_pb2


def _view(at_ms: int, **latency_by_endpoint: float) -> discovery_pb2.FleetHealth:
    view = discovery_pb2.FleetHealth(generated_at_unix_ms=at_ms)
    for endpoint, latency_ms in latency_by_endpoint.items():
        view.endpoints.add(endpoint=endpoint, requests=10, success_rate=1.0, latency_ms=latency_ms)
    return view


def test_one_point_per_step_and_only_so_many() -> None:
    history = HealthHistory(step_s=10, points=3)
    history.record(_view(1_000, a=5))
    history.record(_view(9_000, a=7))          # same step: replaces the point
    history.record(_view(12_000, a=9, b=1))
    history.record(_view(25_000, b=2))
    history.record(_view(31_000, a=4))         # a fourth step: the oldest is dropped
    series = history.series()
    assert [(at, latency) for at, _, latency, _ in series["a"]] == [(12_000, 9), (31_000, 4)]
    assert [at for at, *_ in series["b"]] == [12_000, 25_000]
