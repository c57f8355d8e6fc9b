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


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_quoted() -> None:
    row = admin_pb2.UsageRow(dimensions={"model": "=HYPERLINK(\"http://x\")", "route": "-1+2"}, requests=1)
    line = usage_view.to_csv([row], ["model", "route"]).splitlines()[1]
    assert line.startswith("\"'=HYPERLINK(\"\"http://x\"\")\",'-1+2,1,")


def test_dates_beyond_the_calendar_do_not_break_a_page() -> None:
    from console.app import _ms_date
    assert _ms_date(253_402_300_800_000 * 10) == "—" and _ms_date(0) == "—"
    assert _ms_date(1_765_000_000_000, with_time=False) == "2025-12-06"


def test_the_what_if_child_gets_the_viewers_credential_and_none_of_the_consoles_secrets(monkeypatch) -> None:
    from console.whatif import child_env
    monkeypatch.setenv("MEGAROUTER_CONSOLE_TOKEN", "mr-console-secret")
    monkeypatch.setenv("MEGAROUTER_OIDC_CLIENT_SECRET", "oidc-secret")
    monkeypatch.setenv("MEGAROUTER_ADMIN_TOKEN_FILE", "/somewhere/admin-token")
    monkeypatch.setenv("MEGAROUTER_CONTROL_PLANE_CA", "/etc/ca.pem")
    env = child_env("mr-session-viewer")
    assert env["MEGAROUTER_ADMIN_TOKEN"] == "mr-session-viewer" and env["MEGAROUTER_CONTROL_PLANE_CA"] == "/etc/ca.pem"
    assert not {"MEGAROUTER_CONSOLE_TOKEN", "MEGAROUTER_OIDC_CLIENT_SECRET", "MEGAROUTER_ADMIN_TOKEN_FILE"} & set(env)


def test_the_sign_in_limiter_counts_attempts_until_forgiven_and_bounds_memory() -> None:
    from console.security import FailureLimiter
    now = [0.0]
    limiter = FailureLimiter(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):  # three guesses in flight at once: the fourth is refused before any answer
        assert not limiter.blocked("addr:a")
        limiter.attempt("addr:a")
    assert limiter.blocked("addr:a")
    limiter.forgive("addr:a")  # one of them was right
    assert not limiter.blocked("addr:a")
    for _ in range(50):
        limiter.record_failure("addr:b")
    assert len(limiter._failures["addr:b"]) == 3  # bounded per key
    now[0] += 61
    assert not limiter.blocked("addr:a", "addr:b")


def test_the_client_address_believes_only_the_trusted_proxies() -> None:
    from console.security import client_address
    assert client_address("10.0.0.9", "6.6.6.6, 203.0.113.7", 0) == "10.0.0.9"
    assert client_address("10.0.0.9", "6.6.6.6, 203.0.113.7", 1) == "203.0.113.7"  # the client wrote 6.6.6.6
    assert client_address("10.0.0.9", "203.0.113.7", 2) == "10.0.0.9"  # fewer hops than promised
