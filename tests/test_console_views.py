"""The console's usage views as pure functions: filters from a query string (errors name the
field), chart series, CSV."""

from __future__ import annotations

import datetime as dt

import pytest
from multidict import MultiDict

from console import usage_view
from megarouter.v1 import admin_pb2


def _row(day: str, model: str, requests: int, cost: float = 0.0, p50: float = 0.0, p99: float = 0.0):
    return admin_pb2.UsageRow(dimensions={"day": day, "model": model}, requests=requests, cost_usd=cost,
                              latency_p50_ms=p50, latency_p99_ms=p99)


@pytest.mark.parametrize(("query", "field"), [
    ({"since": "yesterday"}, "since"), ({"until": "2026-13-01"}, "until"),
    ({"since": "2026-12-05", "until": "2026-12-01"}, "until"), ({"group_by": "colour"}, "group_by"),
    ({"metric": "vibes"}, "metric"), ({"since": "2024-01-01", "until": "2026-01-01"}, "since"),
])
def test_bad_filters_name_the_field(query: dict, field: str) -> None:
    with pytest.raises(usage_view.FilterError) as bad:
        usage_view.parse_filters(MultiDict(query))
    assert bad.value.field == field


def test_filters_round_trip_through_the_query_string() -> None:
    query = MultiDict([("group_by", "day"), ("group_by", "model"), ("since", "2026-12-01"), ("until", "2026-12-07"),
                       ("node", "team-a"), ("metric", "cost_usd")])
    filters = usage_view.parse_filters(query)
    again = usage_view.parse_filters(MultiDict(__import__("urllib.parse").parse.parse_qsl(filters.query_string())))
    assert again == filters
    request = filters.request()
    assert list(request.group_by) == ["day", "model"] and request.node == "team-a"
    assert request.until_unix_ms - request.since_unix_ms == 7 * 86_400_000  # the last day is included


def test_day_series_fill_missing_days_and_fold_the_tail_into_other() -> None:
    since, until = dt.date(2026, 12, 1), dt.date(2026, 12, 3)
    rows = [_row("2026-12-01", f"m{i}", 10 - i) for i in range(usage_view.MAX_SERIES + 2)]
    rows.append(_row("2026-12-03", "m0", 5))
    series = usage_view.day_series(rows, "requests", since, until, "model")
    assert len(series["x"]) == 3 and series["x"][1] - series["x"][0] == 86400
    labels = [s["label"] for s in series["series"]]
    assert labels[0] == "m0" and labels[-1] == "other" and len(labels) == usage_view.MAX_SERIES + 1
    assert series["series"][0]["values"] == [10, 0, 5]
    assert series["series"][-1]["values"] == [1 + 2, 0, 0]  # m8 (2) and m9 (1)


def test_latency_series_leave_gaps_rather_than_zeros_and_are_never_summed() -> None:
    since, until = dt.date(2026, 12, 1), dt.date(2026, 12, 2)
    series = usage_view.day_series([_row("2026-12-02", "", 3, p50=120, p99=240)], "latency", since, until, None)
    assert {s["label"]: s["values"] for s in series["series"]} == {"p50": [None, 120], "p99": [None, 240]}


def test_csv_has_one_line_per_row_with_latencies() -> None:
    text = usage_view.to_csv([_row("2026-12-01", "m", 2, cost=0.5, p50=12.34, p99=56.78)], ["day", "model"])
    header, line = text.strip().splitlines()
    assert header.split(",")[:3] == ["day", "model", "requests"] and header.endswith("latency_p50_ms,latency_p99_ms")
    assert line.startswith("2026-12-01,m,2,") and "0.500000" in line and line.endswith("12.3,56.8")
