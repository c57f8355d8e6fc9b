"""Usage queries as the console's pages ask for them: filters from a query string (with
errors that name the field, never a silent default), chart series and CSV.

Pure functions over `QueryUsage` rows, so they are tested without a browser.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from typing import Any

from megarouter.v1 import admin_pb2

DIMENSIONS = ("day", "node", "key", "model", "route")
# Counters add up across rows; latency percentiles do not (the control plane computes them
# from bucket counts for each row), so totals and "other" series use the additive ones only.
ADDITIVE = {"requests": "Requests", "cost_usd": "Cost (USD)", "errors": "Errors",
            "prompt_tokens": "Prompt tokens", "completion_tokens": "Completion tokens"}
METRICS = {**ADDITIVE, "latency_p50_ms": "p50 latency (ms)", "latency_p99_ms": "p99 latency (ms)",
           "latency": "p50 and p99 latency (ms)"}
# A chart shows this many series; the rest are summed into "other".
MAX_SERIES = 8
DEFAULT_DAYS = 30


class FilterError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass
class UsageFilters:
    group_by: list[str] = field(default_factory=lambda: ["day"])
    node: str = ""
    key: str = ""
    since: dt.date = field(default_factory=lambda: today() - dt.timedelta(days=DEFAULT_DAYS - 1))
    until: dt.date = field(default_factory=lambda: today())          # inclusive
    metric: str = "requests"

    def request(self) -> admin_pb2.QueryUsageRequest:
        return admin_pb2.QueryUsageRequest(
            node=self.node, key=self.key, group_by=self.group_by,
            since_unix_ms=_ms(self.since), until_unix_ms=_ms(self.until + dt.timedelta(days=1)))

    def query_string(self, **overrides: Any) -> str:
        from urllib.parse import urlencode
        values = {"group_by": self.group_by, "node": self.node, "key": self.key, "since": self.since.isoformat(),
                  "until": self.until.isoformat(), "metric": self.metric, **overrides}
        return urlencode([(k, v) for k, vs in values.items() for v in (vs if isinstance(vs, list) else [vs]) if v],
                         doseq=False)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def _date(query, name: str, default: dt.date) -> dt.date:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise FilterError(name, f"{raw!r} is not a date (YYYY-MM-DD)") from None


def parse_filters(query) -> UsageFilters:
    """Filters from a query string (a MultiDict); FilterError names the bad field."""
    filters = UsageFilters()
    group_by = [g for g in query.getall("group_by", []) if g]
    unknown = [g for g in group_by if g not in DIMENSIONS]
    if unknown:
        raise FilterError("group_by", f"unknown {unknown} (use {', '.join(DIMENSIONS)})")
    if group_by or "group_by" in query:
        filters.group_by = list(dict.fromkeys(group_by))
    filters.node = query.get("node", "").strip()
    filters.key = query.get("key", "").strip()
    filters.since = _date(query, "since", filters.since)
    filters.until = _date(query, "until", filters.until)
    if filters.until < filters.since:
        raise FilterError("until", "is before since")
    if (filters.until - filters.since).days > 366:
        raise FilterError("since", "a range of at most 366 days")
    metric = query.get("metric", "requests")
    if metric not in METRICS:
        raise FilterError("metric", f"unknown {metric!r} (use {', '.join(METRICS)})")
    filters.metric = metric
    return filters


def row_dict(row: admin_pb2.UsageRow) -> dict[str, Any]:
    return {**dict(row.dimensions), "requests": row.requests, "errors": row.errors,
            "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
            "cost_usd": row.cost_usd}


def totals(rows: list[admin_pb2.UsageRow]) -> dict[str, float]:
    result = {metric: 0 for metric in ADDITIVE}
    for row in rows:
        for metric in ADDITIVE:
            result[metric] += getattr(row, metric)
    result["error_rate"] = result["errors"] / result["requests"] if result["requests"] else 0.0
    return result


def day_series(rows: list[admin_pb2.UsageRow], metric: str, since: dt.date, until: dt.date,
               split_by: str | None) -> dict[str, Any]:
    """uPlot-shaped data: x (unix seconds, one per day of the range, days without usage at
    0) and one series per value of `split_by` (the largest MAX_SERIES, the rest as "other")."""
    days = [since + dt.timedelta(days=i) for i in range((until - since).days + 1)]
    index = {day.isoformat(): i for i, day in enumerate(days)}
    # "latency" draws p50 and p99 as two series; other metrics one series per `split_by` value.
    fields = {"p50": "latency_p50_ms", "p99": "latency_p99_ms"} if metric == "latency" else {None: metric}
    by_label: dict[str, list[float | None]] = {}
    for row in rows:
        day = row.dimensions.get("day", "")
        if day not in index:
            continue
        for name, attribute in fields.items():
            label = name or ((row.dimensions.get(split_by, "") or "(none)") if split_by else METRICS[metric])
            values = by_label.setdefault(label, [0.0 if metric in ADDITIVE else None] * len(days))
            value = getattr(row, attribute)
            if metric in ADDITIVE:
                values[index[day]] += value
            elif value:  # a day without latency samples is a gap in the line, not a zero
                values[index[day]] = value
    ranked = sorted(by_label.items(), key=lambda item: -sum(v or 0 for v in item[1]))
    series = [{"label": label, "values": values} for label, values in ranked[:MAX_SERIES]]
    if len(ranked) > MAX_SERIES and metric in ADDITIVE:
        other = [sum(values[i] for _, values in ranked[MAX_SERIES:]) for i in range(len(days))]
        series.append({"label": "other", "values": other})
    return {"metric": metric, "metric_label": METRICS[metric],
            "x": [_ms(day) // 1000 for day in days], "series": series}


def _cell(text: str) -> str:
    """A label made safe for spreadsheets: a leading = + - @ (or tab/CR) would make Excel or
    Sheets evaluate the cell as a formula, so it gets a quote first (OWASP's CSV injection
    advice). Names are ours, but model and route labels come from proxies' reports."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(rows: list[admin_pb2.UsageRow], group_by: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    columns = [*ADDITIVE, "latency_p50_ms", "latency_p99_ms"]
    writer.writerow([*group_by, *columns])
    for row in rows:
        writer.writerow([*(_cell(row.dimensions.get(d, "")) for d in group_by),
                         *(f"{getattr(row, m):.6f}" if m == "cost_usd" else
                           f"{getattr(row, m):.1f}" if m.startswith("latency") else getattr(row, m)
                           for m in columns)])
    return out.getvalue()
