from megarouter.v1 import routing_pb2 as _routing_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("id", "region", "version")
    ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    region: str
    version: str
    def __init__(self, id: _Optional[str] = ..., region: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DiscoveryRequest(_message.Message):
    __slots__ = ("node", "version_info", "response_nonce", "error_detail")
    NODE_FIELD_NUMBER: _ClassVar[int]
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_NONCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAIL_FIELD_NUMBER: _ClassVar[int]
    node: Node
    version_info: int
    response_nonce: str
    error_detail: ErrorDetail
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., version_info: _Optional[int] = ..., response_nonce: _Optional[str] = ..., error_detail: _Optional[_Union[ErrorDetail, _Mapping]] = ...) -> None: ...

class EndpointFleetHealth(_message.Message):
    __slots__ = ("endpoint", "requests", "success_rate", "latency_ms", "ttft_ms", "reporting_proxies", "ejected_by")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    REPORTING_PROXIES_FIELD_NUMBER: _ClassVar[int]
    EJECTED_BY_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    requests: int
    success_rate: float
    latency_ms: float
    ttft_ms: float
    reporting_proxies: int
    ejected_by: int
    def __init__(self, endpoint: _Optional[str] = ..., requests: _Optional[int] = ..., success_rate: _Optional[float] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., reporting_proxies: _Optional[int] = ..., ejected_by: _Optional[int] = ...) -> None: ...

class FleetHealth(_message.Message):
    __slots__ = ("generation", "generated_at_unix_ms", "proxies", "window_s", "endpoints")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    generated_at_unix_ms: int
    proxies: int
    window_s: float
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointFleetHealth]
    def __init__(self, generation: _Optional[int] = ..., generated_at_unix_ms: _Optional[int] = ..., proxies: _Optional[int] = ..., window_s: _Optional[float] = ..., endpoints: _Optional[_Iterable[_Union[EndpointFleetHealth, _Mapping]]] = ...) -> None: ...

class DiscoveryResponse(_message.Message):
    __slots__ = ("version", "table", "nonce", "fleet_health")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    FLEET_HEALTH_FIELD_NUMBER: _ClassVar[int]
    version: int
    table: _routing_pb2.RoutingTable
    nonce: str
    fleet_health: FleetHealth
    def __init__(self, version: _Optional[int] = ..., table: _Optional[_Union[_routing_pb2.RoutingTable, _Mapping]] = ..., nonce: _Optional[str] = ..., fleet_health: _Optional[_Union[FleetHealth, _Mapping]] = ...) -> None: ...
