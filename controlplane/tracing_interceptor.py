"""A server span for each admin call, when tracing is on (`megarouter.tracing`).

Only the Admin service's unary calls: the proxies' long-lived streams (Discovery, Telemetry)
would be one span a day each. The span carries the method and the gRPC status code —
never a request or response message, which may hold names an operator typed but nothing
more is needed to follow a trace through the control plane.
"""

from __future__ import annotations

import grpc

from megarouter import tracing

_TRACED_PREFIX = "/megarouter.v1.Admin/"


class TracingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if (handler is None or tracing.tracer() is None or not details.method.startswith(_TRACED_PREFIX)
                or handler.request_streaming or handler.response_streaming):
            return handler
        service, _, method = details.method.lstrip("/").partition("/")
        metadata = {key: value for key, value in (details.invocation_metadata or ())
                    if key in ("traceparent", "tracestate")}
        behavior = handler.unary_unary

        async def traced(request, context):
            def describe():
                return f"{service}/{method}", {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            with tracing.span("server", describe, metadata) as span:
                try:
                    response = await behavior(request, context)
                except BaseException:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    tracing.set_attributes(span, {"rpc.grpc.status_code": code.value[0]})
                    tracing.fail(span, code.name)
                    raise
                tracing.set_attributes(span, {"rpc.grpc.status_code": 0})
                return response

        return grpc.unary_unary_rpc_method_handler(traced, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)
