"""OpenTelemetry traces, opt-in, for the proxy and the control plane.

On when `--otel-endpoint URL` is given or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables are set (`OTEL_SERVICE_NAME` names the
service). Spans are exported over OTLP/HTTP by the OpenTelemetry SDK's batch processor: a
background thread with a bounded queue, so export never runs on a request's path, and an
unreachable or slow collector drops spans rather than slowing or failing requests.

Off, `tracer()` is None and every call site skips its span: no SDK objects are made per
request, so tracing off costs nothing measurable.

What spans may carry: names, counts, models, endpoints, outcomes, costs — the OpenTelemetry
GenAI semantic conventions' request/response/usage attributes and ours. **Never content.**
The conventions define prompt and completion attributes and events (`gen_ai.input.messages`,
`gen_ai.output.messages`, …); this module has no way to set them, and `safe_attributes`
refuses any attribute outside the allow-list, so a future call site cannot add one by
accident.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("megarouter.tracing")

# The attributes a span may carry. GenAI conventions (semconv 1.37+) and MegaRouter's own.
ALLOWED_ATTRIBUTES = frozenset({
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons",
    "gen_ai.request.max_tokens", "gen_ai.request.stream",
    "http.request.method", "http.response.status_code", "http.route", "url.path", "server.address",
    "server.port", "error.type",
    "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code",
    "megarouter.route", "megarouter.route_kind", "megarouter.strategy", "megarouter.endpoint",
    "megarouter.provider", "megarouter.region", "megarouter.attempt", "megarouter.attempts",
    "megarouter.failover_reason", "megarouter.cost_usd", "megarouter.key", "megarouter.node",
    "megarouter.request_id", "megarouter.cached_tokens", "megarouter.task",
})

_TRACER = None
_PROVIDER = None


def configure(service_name: str, endpoint: str = "") -> bool:
    """Turn tracing on if an endpoint is given or configured in the environment; True if on."""
    global _TRACER, _PROVIDER
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "")
    if not endpoint:
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    # A short export timeout: a dead collector costs the exporter thread, never a request.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5),
                                                   schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    _PROVIDER = provider
    _TRACER = trace.get_tracer("megarouter")
    log.info("tracing on: spans go to %s", endpoint)
    return True


def tracer():
    return _TRACER


def shutdown() -> None:
    """Export what is queued (bounded by the exporter's timeout) and stop."""
    if _PROVIDER is not None:
        _PROVIDER.shutdown()


def safe_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(attributes) - ALLOWED_ATTRIBUTES
    if unknown:  # a programming error: refuse rather than export something unvetted
        raise ValueError(f"span attributes not on the allow-list: {sorted(unknown)}")
    return {key: value for key, value in attributes.items() if value is not None and value != ""}


@contextmanager
def span(kind: str, describe: Callable[[], tuple[str, Mapping[str, Any]]], headers: Mapping[str, str] | None = None
         ) -> Iterator[Any]:
    """A span if tracing is on, else None; `kind` "server", "client" or "internal".
    `describe()` gives its name and attributes — called only when tracing is on, so a request
    pays nothing for building them otherwise. A server span continues the trace in `headers`
    (W3C traceparent)."""
    if _TRACER is None:
        yield None
        return
    from opentelemetry.propagate import extract as otel_extract
    from opentelemetry.trace import SpanKind
    name, attributes = describe()
    span_kind = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT}.get(kind, SpanKind.INTERNAL)
    with _TRACER.start_as_current_span(name, context=otel_extract(headers) if headers is not None else None,
                                       kind=span_kind, attributes=safe_attributes(attributes),
                                       record_exception=False, set_status_on_exception=False) as current:
        yield current


def set_attributes(current, attributes: Mapping[str, Any]) -> None:
    if current is not None:
        current.set_attributes(safe_attributes(attributes))


def fail(current, error_type: str) -> None:
    """Mark a span failed with a class name — never an exception's message, which may quote input."""
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode
    current.set_attribute("error.type", error_type)
    current.set_status(Status(StatusCode.ERROR))


def inject() -> dict[str, str]:
    """Headers carrying the current trace context to an upstream."""
    if _TRACER is None:
        return {}
    from opentelemetry.propagate import inject as otel_inject
    carrier: dict[str, str] = {}
    otel_inject(carrier)
    return carrier
