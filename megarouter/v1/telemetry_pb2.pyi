from megarouter.v1 import discovery_pb2 as _discovery_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndpointStats(_message.Message):
    __slots__ = ("endpoint", "requests", "successes", "errors_by_class", "latency_ms_sum", "ttft_ms_sum", "ttft_count", "prompt_tokens", "completion_tokens", "cost_usd", "ejected")
    class ErrorsByClassEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_CLASS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_SUM_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_SUM_FIELD_NUMBER: _ClassVar[int]
    TTFT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    requests: int
    successes: int
    errors_by_class: _containers.ScalarMap[str, int]
    latency_ms_sum: float
    ttft_ms_sum: float
    ttft_count: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    ejected: bool
    def __init__(self, endpoint: _Optional[str] = ..., requests: _Optional[int] = ..., successes: _Optional[int] = ..., errors_by_class: _Optional[_Mapping[str, int]] = ..., latency_ms_sum: _Optional[float] = ..., ttft_ms_sum: _Optional[float] = ..., ttft_count: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., ejected: _Optional[bool] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("key", "node", "model", "route", "day", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms_buckets")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    key: str
    node: str
    model: str
    route: str
    day: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms_buckets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key: _Optional[str] = ..., node: _Optional[str] = ..., model: _Optional[str] = ..., route: _Optional[str] = ..., day: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., latency_ms_buckets: _Optional[_Iterable[int]] = ...) -> None: ...

class StatsReport(_message.Message):
    __slots__ = ("node", "interval_ms", "endpoints", "usage")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    node: _discovery_pb2.Node
    interval_ms: int
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointStats]
    usage: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    def __init__(self, node: _Optional[_Union[_discovery_pb2.Node, _Mapping]] = ..., interval_ms: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[EndpointStats, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ...) -> None: ...

class StatsAck(_message.Message):
    __slots__ = ("reports_received",)
    REPORTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    reports_received: int
    def __init__(self, reports_received: _Optional[int] = ...) -> None: ...
